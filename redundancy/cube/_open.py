"""Open a cube lazily: every cell as dask arrays, combined on labels with NaN where absent."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import xarray as xr

from ..errors import StoreError
from ._schema import PROVENANCE
from ._store import CubeStore


def _open_cell(path: Path) -> xr.Dataset:
    ds = xr.open_zarr(str(path), consolidated=False, zarr_format=3)
    for name in PROVENANCE:  # scalar strings: object dtype, so a missing cell can hold NaN
        ds[name] = ds[name].astype(object).load()
    # tokens and provenance travel as data variables so that concat keeps them per cell
    return ds.reset_coords("tokens").expand_dims(["model", "dataset", "step"])


def open_cube(path: str | Path) -> xr.Dataset:
    """The cube at `path` as a lazy Dataset over (model, step, layer, module, dataset, sample).

    Layers beyond a model's depth, steps a model lacks and samples beyond a set's count are NaN.
    `tokens` is a (model, step) coordinate; provenance is over (model, step, dataset).
    """
    store = CubeStore(Path(path))
    if not (store.path / "zarr.json").exists():
        raise StoreError(f"{store.path} is not a cube store (no zarr.json); score into it first")
    store._check_path()
    groups: dict[tuple[str, str], list[xr.Dataset]] = defaultdict(list)
    for cell_path in store.cell_paths():
        cell = _open_cell(cell_path)
        groups[(cell["model"].item(), cell["dataset"].item())].append(cell)
    if not groups:
        raise StoreError(f"{store.path} holds no scores yet")
    by_model: dict[str, list[xr.Dataset]] = defaultdict(list)
    for (model, _), cells in sorted(groups.items()):
        by_model[model].append(xr.concat(sorted(cells, key=lambda c: int(c["step"][0])), dim="step",
                                         join="outer"))
    per_model = [xr.concat(v, dim="dataset", join="outer") for v in by_model.values()]
    cube = xr.concat(per_model, dim="model", join="outer")
    cube["tokens"] = cube["tokens"].max("dataset").compute()  # tokens seen: one value per (model, step)
    cube = cube.set_coords(["tokens", *(v for v in PROVENANCE if v in cube)])
    cube.attrs.update(settings=store.settings())
    return cube.transpose("model", "step", "layer", "module", "dataset", "sample", ...)
