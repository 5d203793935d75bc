"""Open a cube lazily: every cell as dask arrays, combined on labels with NaN where absent."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import StoreError
from ._schema import PROVENANCE
from ._store import CubeStore


def _open_cell(path: Path) -> xr.Dataset:
    ds = xr.open_zarr(str(path), consolidated=False, zarr_format=3)
    for name in PROVENANCE:  # scalar strings: object dtype, so a missing cell can hold NaN
        ds[name] = ds[name].astype(object).load() if name in ds else ((), np.array("", dtype=object))
    # tokens and provenance travel as data variables so that concat keeps them per cell
    return ds.reset_coords("tokens").expand_dims(["model", "dataset", "step"])


def _combine(cells: list[xr.Dataset]) -> xr.Dataset:
    """Cells with length-1 (model, dataset, step) dims -> one Dataset, outer-joined on labels."""
    groups: dict[tuple[str, str], list[xr.Dataset]] = defaultdict(list)
    for cell in cells:
        groups[(cell["model"].item(), cell["dataset"].item())].append(cell)
    by_model: dict[str, list[xr.Dataset]] = defaultdict(list)
    for (model, _), group in sorted(groups.items()):
        by_model[model].append(xr.concat(sorted(group, key=lambda c: int(c["step"][0])), dim="step",
                                         join="outer"))
    per_model = [xr.concat(v, dim="dataset", join="outer") for v in by_model.values()]
    return xr.concat(per_model, dim="model", join="outer")


def _open_orders(store: CubeStore) -> xr.Dataset | None:
    paths = store.cell_paths("orders")
    if not paths:
        return None
    cells = [xr.open_zarr(str(p), consolidated=False, zarr_format=3).load()
             .expand_dims(["model", "dataset", "step"]) for p in paths]
    return _combine(cells)


def _per_step(var: xr.DataArray) -> xr.DataArray:
    """A string per (model, step, dataset) -> one per (model, step): the first non-empty value."""
    values = var.transpose("model", "step", "dataset").values
    out = np.array([[next((str(v) for v in row if isinstance(v, str) and v), "") for row in steps]
                    for steps in values], dtype=object)
    return xr.DataArray(out, dims=("model", "step"), coords={"model": var["model"], "step": var["step"]})


def open_cube(path: str | Path) -> xr.Dataset:
    """The cube at `path` as a lazy Dataset over (model, step, layer, module, dataset, sample).

    Layers beyond a model's depth, steps a model lacks and samples beyond a set's count are NaN.
    `tokens` is a (model, step) coordinate; provenance variables (fingerprint, dtype, device,
    revision, scored_at, package_version) and integrity flags (duplicate_of, partial_duplicate_of,
    identical_to_final, config_drift, tokenizer_from; "" where unset) are over (model, step,
    dataset). `stage` (model, step) names the training stage of multi-stage histories ("" else);
    `suite`, `seed` (-1 outside a suite) and `seed_kind` (model) say which run of a suite each is.
    `flagged`, a boolean (model, step) coordinate, marks steps identical to the final
    one (wrong uploads): the dynamics analyses leave them out unless asked to keep them. Where
    dropping orders were stored, `drop_order` holds them over (model, step, dataset, strategy,
    module, rank): the layer dropped at each rank, -1 where none.
    """
    store = CubeStore(Path(path))
    if not (store.path / "zarr.json").exists():
        raise StoreError(f"{store.path} is not a cube store (no zarr.json); score into it first")
    store._check_path()
    cells = [_open_cell(p) for p in store.cell_paths()]
    if not cells:
        raise StoreError(f"{store.path} holds no scores yet")
    cube = _combine(cells)
    cube["tokens"] = cube["tokens"].max("dataset").compute()  # tokens seen: one value per (model, step)
    cube["flagged"] = (cube["identical_to_final"] == "true").any("dataset").compute()
    cube["stage"] = _per_step(cube["stage"])
    for name in ("suite", "seed_kind", "seed"):  # suites: one value per model (its run)
        cube[name] = _per_step(cube[name]).max("step") if cube.sizes["step"] else cube[name]
    cube["seed"] = xr.DataArray([int(v) if v else -1 for v in cube["seed"].values], dims="model")
    # metric arrays clean
    cube = cube.set_coords(["tokens", "flagged", "stage", "suite", "seed_kind", "seed"])
    orders = _open_orders(store)
    if orders is not None:
        cube = xr.merge([cube, orders], join="left", compat="override", combine_attrs="override")
        cube["drop_order"] = cube["drop_order"].fillna(-1).astype(int)  # steps without orders: -1
    cube.attrs.update(settings=store.settings())
    return cube.transpose("model", "step", "layer", "module", "dataset", "sample", ...)
