"""The cube: schema, labels, NaN beyond a model's depth, string names of any length, laziness."""
from __future__ import annotations

import dask.array
import numpy as np
import pytest
import xarray as xr

from redundancy.cube import CubeStore, make_cell, open_cube
from redundancy.errors import StoreError

SETTINGS = dict(n_samples=3, seq_len=8, seed=0, pool_factor=4, packing="p")


def _cell(rng, model, step, dataset, layers):
    return make_cell(rng.random((3, layers, 3, 2)), ["importance", "angular_distance"], model=model,
                     step=step, dataset=dataset, tokens=step * 10.0,
                     provenance={"fingerprint": f"{model}-{dataset}", "dtype": "float32"})


def test_cells_combine_on_labels(tmp_path):
    rng = np.random.default_rng(0)
    store = CubeStore.open(tmp_path / "c.zarr", SETTINGS)
    cells = {}
    for model, layers in (("m", 2), ("an-org/a-much-longer-model-name", 5)):
        for step in (0, 7, 70):
            for dataset in ("x", "a-longer-dataset-name"):
                if (model, step, dataset) == ("m", 70, "x"):
                    continue  # a missing cell reads as NaN
                cells[(model, step, dataset)] = c = _cell(rng, model, step, dataset, layers)
                assert store.write_cell(c)
    assert not store.write_cell(cells[("m", 0, "x")])  # idempotent: kept as it was
    cube = open_cube(tmp_path / "c.zarr")
    assert isinstance(cube.importance.data, dask.array.Array)  # lazy
    assert cube.importance.dims == ("model", "step", "layer", "module", "dataset", "sample")
    assert set(cube.dataset.values) == {"x", "a-longer-dataset-name"}
    assert list(cube.module.values) == ["block", "attn", "mlp"]
    for (model, step, dataset), c in cells.items():
        got = cube.importance.sel(model=model, step=step, dataset=dataset).dropna("layer", how="all")
        # the cell's labels (layer, module, sample; model, step, dataset, tokens), values; the cube adds more
        xr.testing.assert_equal(got.drop_vars(set(got.coords) - set(c.coords)), c.importance)
        assert cube.fingerprint.sel(model=model, step=step, dataset=dataset).item() == f"{model}-{dataset}"
    assert cube.importance.sel(model="m", layer=[2, 3, 4]).isnull().all()  # beyond the depth
    assert cube.importance.sel(model="m", step=70, dataset="x").isnull().all()
    assert cube.tokens.sel(model="m", step=70).item() == 700.0
    assert cube.attrs["settings"]["seq_len"] == 8


def test_non_cube_zarr_and_folders_refused(tmp_path):
    import zarr
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a redundancy cube"):
        CubeStore.open(tmp_path / "other.zarr", SETTINGS)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(StoreError, match="non-empty folder"):
        CubeStore.open(tmp_path / "docs", SETTINGS)
    with pytest.raises(StoreError, match="no zarr.json"):
        open_cube(tmp_path / "nothing")


def test_settings_mismatch_says_what_differs(tmp_path):
    CubeStore.open(tmp_path / "c.zarr", SETTINGS)
    with pytest.raises(StoreError, match="n_samples: 3 stored, 5 asked; seed: 0 stored, 1 asked"):
        CubeStore.open(tmp_path / "c.zarr", {**SETTINGS, "n_samples": 5, "seed": 1})
