"""Open a cube lazily: every metric a dask array over the cells, combined on labels, NaN where absent.

A format-2 cube opens from its index alone (`_index`): labels, provenance and shapes come from the
records, and each dask chunk (one model, one dataset, up to `STEP_BLOCK` steps) reads its cells'
metric files when computed, checking their bytes against the record. Opening costs the index read,
not one read per cell. A format-1 cube (no index) opens as before: each cell through xarray.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import StoreError
from ..families import MODULES
from ._cellio import CellChanged, chunk_keys, read_chunk, restore
from ._schema import PROVENANCE
from ._store import CubeStore

STEP_BLOCK = 64  # steps per dask chunk: a heatmap over a history reads a few chunks, one step a few cells


def open_cube(path: str | Path) -> xr.Dataset:
    """The cube at `path` (a folder or an object-store URL such as s3://bucket/cube.zarr) as a lazy
    Dataset over (model, step, layer, module, dataset, sample).

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

    Raises StoreError where `path` is not a cube or holds no scores; computing values of a cell whose
    bytes changed since they were written raises StoreError naming it (`redundancy check` lists all).
    """
    store = CubeStore(path)
    if store.root() is None:
        raise StoreError(f"{store.path} is not a cube store (no zarr.json); score into it first")
    store._check_path()
    raw, orders = (_from_cells(store) if store.format() == 1 else _from_index(store))
    return _finish(raw, orders, store)


def _finish(raw: xr.Dataset, orders: xr.Dataset | None, store: CubeStore) -> xr.Dataset:
    """Per-cell variables over (model, dataset, step) -> the documented coordinates and variables."""
    cube = raw
    cube["tokens"] = cube["tokens"].max("dataset").compute()  # tokens seen: one value per (model, step)
    cube["flagged"] = (cube["identical_to_final"] == "true").any("dataset").compute()
    cube["stage"] = _per_step(cube["stage"])
    for name in ("suite", "seed_kind", "seed"):  # suites: one value per model (its run)
        cube[name] = _per_step(cube[name]).max("step") if cube.sizes["step"] else cube[name]
    cube["seed"] = xr.DataArray([int(v) if v else -1 for v in cube["seed"].values], dims="model")
    cube = cube.set_coords(["tokens", "flagged", "stage", "suite", "seed_kind", "seed"])
    if orders is not None:
        cube = xr.merge([cube, orders], join="left", compat="override", combine_attrs="override")
        cube["drop_order"] = cube["drop_order"].fillna(-1).astype(int)  # steps without orders: -1
    cube.attrs.update(settings=store.settings())
    return cube.transpose("model", "step", "layer", "module", "dataset", "sample", ...)


def _per_step(var: xr.DataArray) -> xr.DataArray:
    """A string per (model, step, dataset) -> one per (model, step): the first non-empty value."""
    values = var.transpose("model", "step", "dataset").values
    out = np.array([[next((str(v) for v in row if isinstance(v, str) and v), "") for row in steps]
                    for steps in values], dtype=object)
    return xr.DataArray(out, dims=("model", "step"), coords={"model": var["model"], "step": var["step"]})


# --- format 2: from the index ------------------------------------------------------------------------

def _from_index(store: CubeStore) -> tuple[xr.Dataset, xr.Dataset | None]:
    records = store.records(refresh=True)
    cells = {(m, s, d): r for (kind, m, s, d), r in records.items() if kind == "cells"}
    if not cells:
        raise StoreError(f"{store.path} holds no scores yet")
    models = sorted({k[0] for k in cells})
    steps = sorted({k[1] for k in cells})
    datasets = sorted({k[2] for k in cells})
    metrics = sorted({v for r in cells.values() for v in r["arrays"]},
                     key=lambda v: next(list(r["arrays"]).index(v)
                                        for r in cells.values() if v in r["arrays"]))
    n_layers = max(a["shape"][0] for r in cells.values() for a in r["arrays"].values())
    n_samples = max(a["shape"][2] for r in cells.values() for a in r["arrays"].values())
    shape = (len(models), len(datasets), len(steps))
    at = {(m, d, s): (i, k, j) for i, m in enumerate(models) for k, d in enumerate(datasets)
          for j, s in enumerate(steps)}
    tokens = np.full(shape, np.nan)
    prov = {name: np.full(shape, np.nan, dtype=object) for name in PROVENANCE}
    for (m, s, d), r in cells.items():
        idx = at[(m, d, s)]
        tokens[idx] = np.nan if r["tokens"] is None else r["tokens"]
        for name in PROVENANCE:
            prov[name][idx] = r["provenance"].get(name, "")
    dims3 = ("model", "dataset", "step")
    data: dict[str, Any] = {m: (dims3 + ("layer", "module", "sample"),
                                _lazy(store, cells, m, models, datasets, steps, n_layers, n_samples))
                            for m in metrics}
    data.update({name: (dims3, v) for name, v in prov.items()})
    data["tokens"] = (dims3, tokens)
    coords = {"model": np.array(models, dtype=object), "dataset": np.array(datasets, dtype=object),
              "step": np.array(steps, dtype=np.int64), "layer": np.arange(n_layers),
              "module": np.array(MODULES, dtype=object), "sample": np.arange(n_samples)}
    return xr.Dataset(data, coords=coords), _orders_from_index(records)


def _lazy(store: CubeStore, cells: dict, metric: str, models: list[str], datasets: list[str],
          steps: list[int], n_layers: int, n_samples: int) -> da.Array:
    """(model, dataset, step, layer, module, sample) float32: one task per (model, dataset, block of
    STEP_BLOCK steps), reading only the cells it covers."""
    blocks = [(lo, min(lo + STEP_BLOCK, len(steps))) for lo in range(0, len(steps), STEP_BLOCK)]
    name = f"cube-{metric}-{abs(hash((store.backend.url, metric, tuple(sorted(cells)))))}"
    graph = {}
    for i, m in enumerate(models):
        for k, d in enumerate(datasets):
            for b, (lo, hi) in enumerate(blocks):
                entries = [(j - lo, store.prefix(m, steps[j], d), cells[(m, steps[j], d)]["arrays"][metric])
                           for j in range(lo, hi)
                           if (m, steps[j], d) in cells and metric in cells[(m, steps[j], d)]["arrays"]]
                graph[(name, i, k, b, 0, 0, 0)] = (_read_block, store.backend, entries,
                                                   (1, 1, hi - lo, n_layers, len(MODULES), n_samples))
    chunks = ((1,) * len(models), (1,) * len(datasets), tuple(hi - lo for lo, hi in blocks), (n_layers,),
              (len(MODULES),), (n_samples,))
    return da.Array(graph, name, chunks, dtype=np.float32)


def _read_block(backend: Any, entries: list, shape: tuple[int, ...]) -> np.ndarray:
    """One dask chunk: the cells' metric arrays placed in a NaN block; changed bytes raise StoreError."""
    out = np.full(shape, np.nan, dtype=np.float32)
    keys = [k for _, prefix, a in entries for k in chunk_keys(prefix, _var(a))]
    blobs = backend.get_many(keys)
    for n, (j, prefix, array) in enumerate(entries):
        try:
            values = read_chunk(array, blobs[2 * n], blobs[2 * n + 1], f"{prefix}/{_var(array)}")
        except CellChanged as exc:
            raise StoreError(f"{backend.url}/{exc}: the cell is not what was written; `redundancy check "
                             f"--repair {backend.url}` sets it aside, then score again") from None
        layers, _, samples = values.shape
        out[0, 0, j, :layers, :, :samples] = values
    return out


def _var(array: dict[str, Any]) -> str:
    return array["name"]


def _orders_from_index(records: dict) -> xr.Dataset | None:
    orders = {(m, s, d): r for (kind, m, s, d), r in records.items() if kind == "orders"}
    if not orders:
        return None
    cells = []
    for (m, s, d), r in sorted(orders.items()):
        o = r["orders"]
        ds = xr.Dataset({"drop_order": (("strategy", "module", "rank"),
                                        np.array(o["drop_order"], dtype=np.int64))},
                        coords={"strategy": np.array(o["strategy"], dtype=object),
                                "module": np.array(o["module"], dtype=object),
                                "rank": np.arange(len(o["drop_order"][0][0])),
                                "model": np.array(m, dtype=object), "step": s,
                                "dataset": np.array(d, dtype=object)},
                        attrs={"metric": o["metric"]})
        cells.append(ds.expand_dims(["model", "dataset", "step"]))
    return _combine(cells)


# --- format 1: every cell through xarray --------------------------------------------------------------

def _open_cell(path: Path) -> xr.Dataset:
    ds = restore(xr.open_zarr(str(path), consolidated=False, zarr_format=3))  # format 2: labels in attrs
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


def _from_cells(store: CubeStore) -> tuple[xr.Dataset, xr.Dataset | None]:
    """Format 1 (and the reference the tests compare the index with): every cell opened through xarray."""
    cells = [_open_cell(p) for p in store.cell_paths()]
    if not cells:
        raise StoreError(f"{store.path} holds no scores yet")
    paths = store.cell_paths("orders")
    orders = None
    if paths:
        orders = _combine([restore(xr.open_zarr(str(p), consolidated=False, zarr_format=3).load())
                           .expand_dims(["model", "dataset", "step"]) for p in paths])
    return _combine(cells), orders
