"""Open a cube lazily: every metric a dask array over the cells, combined on labels, NaN where absent.

A format-2 cube opens from its index alone (`_index`): labels, provenance and shapes come from the
records, and each dask chunk (one model, one dataset, up to `STEP_BLOCK` steps) reads its cells'
metric files when computed, checking their bytes against the record. Opening costs the index read,
not one read per cell. A format-1 cube (no index) opens as before: each cell through xarray.
"""
from __future__ import annotations

import gc
import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import StoreError
from ..families import MODULES
from . import _index
from ._cellio import CellChanged, chunk_keys, read_chunk, restore
from ._schema import PROVENANCE
from ._store import CubeStore, _key

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
    enabled = gc.isenabled()
    gc.disable()  # building the index's objects would trigger collections that walk all of them
    try:
        raw, orders = (_from_cells(store) if store.format() == 1 else _from_index(store))
        return _finish(raw, orders, store)
    finally:
        if enabled:
            gc.enable()


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
    frame = store.records(refresh=True).frame
    cells = frame[frame["kind"] == "cells"]
    if not len(cells):
        if store.backend.children("cells"):
            raise StoreError(f"{store.path} holds cells but its index records none; `redundancy check "
                             f"--repair {store.path}` rebuilds the index from the cells")
        raise StoreError(f"{store.path} holds no scores yet")
    models, i = np.unique(cells["model"].to_numpy(dtype=object), return_inverse=True)
    datasets, k = np.unique(cells["dataset"].to_numpy(dtype=object), return_inverse=True)
    steps, j = np.unique(cells["step"].to_numpy(dtype=np.int64), return_inverse=True)
    metrics = [a for a in _index.array_names(cells) if (cells[f"a/{a}/meta"] != "").any()]
    n_layers = int(max(cells[f"a/{a}/layers"].max() for a in metrics))
    n_samples = int(max(cells[f"a/{a}/samples"].max() for a in metrics))
    shape = (len(models), len(datasets), len(steps))
    keys = {m: _key(m) for m in models} | {d: _key(d) for d in datasets}
    prefixes = np.array([f"cells/{keys[m]}/{keys[d]}/step-{s:012d}" for m, d, s in
                         zip(cells["model"], cells["dataset"], cells["step"])], dtype=object)
    place = (i, k, j)
    dims3 = ("model", "dataset", "step")
    data: dict[str, Any] = {}
    for m in metrics:
        data[m] = xr.Variable(dims3 + ("layer", "module", "sample"),
                              _lazy(store, cells=cells, prefixes=prefixes, place=place, metric=m, shape=shape,
                                    n_layers=n_layers, n_samples=n_samples))
    for name in PROVENANCE:  # object arrays, NaN where no cell (as concatenating cells gives)
        values = np.full(shape, np.nan, dtype=object)
        column = f"p/{name}"
        values[place] = cells[column].to_numpy(dtype=object) if column in cells else ""
        data[name] = xr.Variable(dims3, values, fastpath=True)  # already what xarray would make of it
    tokens = np.full(shape, np.nan)
    tokens[place] = cells["tokens"].to_numpy(dtype=np.float64)
    data["tokens"] = xr.Variable(dims3, tokens)
    coords = {"model": np.array(models, dtype=object), "dataset": np.array(datasets, dtype=object),
              "step": steps, "layer": np.arange(n_layers),
              "module": np.array(MODULES, dtype=object), "sample": np.arange(n_samples)}
    return xr.Dataset(data, coords=coords), _orders_from_index(frame[frame["kind"] == "orders"])


def _lazy(store: CubeStore, cells: Any, prefixes: np.ndarray, place: tuple, metric: str,
          shape: tuple[int, int, int], n_layers: int, n_samples: int) -> da.Array:
    """(model, dataset, step, layer, module, sample) float32: one task per (model, dataset, block of
    STEP_BLOCK steps), reading only the cells it covers."""
    i, k, j = place
    has = (cells[f"a/{metric}/meta"] != "").to_numpy()
    rows = np.flatnonzero(has)
    block = j[rows] // STEP_BLOCK
    order = np.lexsort((j[rows], block, k[rows], i[rows]))
    rows = rows[order]
    group = np.stack([i[rows], k[rows], j[rows] // STEP_BLOCK], axis=1)
    cut = np.flatnonzero(np.any(np.diff(group, axis=0) != 0, axis=1)) + 1
    cols = [cells[f"a/{metric}/{f}"].to_numpy(dtype=object) for f in ("layers", "modules", "samples",
                                                                          "dtype", "meta", "chunk")]
    n_blocks = -(-shape[2] // STEP_BLOCK)
    name = f"cube-{metric}-{uuid.uuid4().hex}"
    graph: dict = {}
    for part in np.split(rows, cut) if len(rows) else []:
        a, b, c = int(i[part[0]]), int(k[part[0]]), int(j[part[0]]) // STEP_BLOCK
        graph[(name, a, b, c, 0, 0, 0)] = (_read_block, store.backend, metric, j[part] - c * STEP_BLOCK,
                                           prefixes[part], *(col[part] for col in cols),
                                           _block_shape(c, shape, n_layers, n_samples))
    for a in range(shape[0]):
        for b in range(shape[1]):
            for c in range(n_blocks):
                graph.setdefault((name, a, b, c, 0, 0, 0),
                                 (np.full, _block_shape(c, shape, n_layers, n_samples), np.nan, np.float32))
    chunks = ((1,) * shape[0], (1,) * shape[1],
              tuple(min(STEP_BLOCK, shape[2] - c * STEP_BLOCK) for c in range(n_blocks)),
              (n_layers,), (len(MODULES),), (n_samples,))
    return da.Array(graph, name, chunks, dtype=np.float32)


def _block_shape(c: int, shape: tuple[int, int, int], n_layers: int, n_samples: int) -> tuple[int, ...]:
    return (1, 1, min(STEP_BLOCK, shape[2] - c * STEP_BLOCK), n_layers, len(MODULES), n_samples)


def _read_block(backend: Any, metric: str, js: np.ndarray, prefixes: np.ndarray, layers: np.ndarray,
                modules: np.ndarray, samples: np.ndarray, dtypes: np.ndarray, metas: np.ndarray,
                chunks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One dask chunk: the cells' `metric` arrays placed in a NaN block; changed bytes raise StoreError.
    Per cell (arrays aligned): its step within the block, prefix, shape, dtype, and the digests of the
    metric's zarr.json and chunk ("" where zarr wrote no chunk)."""
    out = np.full(shape, np.nan, dtype=np.float32)
    blobs = backend.get_many([key for prefix in prefixes for key in chunk_keys(prefix, metric)])
    for n, prefix in enumerate(prefixes):
        array = {"shape": [int(layers[n]), int(modules[n]), int(samples[n])], "dtype": dtypes[n],
                 "meta": metas[n], "chunk": chunks[n] or None}
        try:
            values = read_chunk(array, blobs[2 * n], blobs[2 * n + 1], f"{prefix}/{metric}")
        except CellChanged as exc:
            raise StoreError(f"{backend.url}/{exc}: the cell is not what was written; `redundancy check "
                             f"--repair {backend.url}` removes it, then score again") from None
        out[0, 0, js[n], :values.shape[0], :, :values.shape[2]] = values
    return out


def _orders_from_index(frame: Any) -> xr.Dataset | None:
    if not len(frame):
        return None
    cells = []
    for m, s, d, text in sorted(zip(frame["model"], frame["step"], frame["dataset"], frame["orders"])):
        o = json.loads(text)
        values = np.array(o["drop_order"], dtype=np.int64)
        ds = xr.Dataset({"drop_order": (("strategy", "module", "rank"), values)},
                        coords={"strategy": np.array(o["strategy"], dtype=object),
                                "module": np.array(o["module"], dtype=object),
                                "rank": np.arange(values.shape[2]), "model": np.array(m, dtype=object),
                                "step": int(s), "dataset": np.array(d, dtype=object)},
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
