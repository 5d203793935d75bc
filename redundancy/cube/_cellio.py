"""A cell as bytes: encoded to its zarr v3 files in memory, checksummed, and decoded back.

Format 2 (this module): a cell is a zarr v3 group, one array per metric over (layer, module, sample),
float32, one uncompressed chunk each (codec `bytes`, little endian: zarr-python writes it, and a
reader that knows the record can also read the chunk as it is); provenance strings are group
attributes (`redundancy_provenance`), not arrays. `.complete.json`, written last, records the cell's
labels (kind, model, dataset, step) and every file's size and xxh3-64 digest. The index record of a
cell (`_index`) repeats what a reader needs: labels, shape, provenance, and the digests of each
metric's `zarr.json` and chunk, so a read checks the bytes it reads against what was written.

Format 1 cells (written before): provenance as one zarr array per string, a `.complete.json` of
sizes only (or none). They are read through xarray as they are (`decode`), and `upgrade` rewrites them.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr
import xxhash

from ._backend import COMPLETE
from ._schema import PROVENANCE

CELL_FORMAT = 2
_PROV_ATTR = "redundancy_provenance"
_CHUNK = "c/0/0/0"  # the one chunk of a 3-D array (zarr v3 default chunk key encoding, "/" separator)


def digest(data: bytes) -> str:
    """xxh3-64 of `data`, hex (16 characters)."""
    return xxhash.xxh3_64_hexdigest(data)


def labels_of(cell: xr.Dataset) -> tuple[str, int, str]:
    """(model, step, dataset) of a cell."""
    return str(cell["model"].item()), int(cell["step"].item()), str(cell["dataset"].item())


def _value_vars(cell: xr.Dataset) -> list[str]:
    """The arrays with dimensions: metrics (cells) or drop_order (orders)."""
    return [str(v) for v in cell.data_vars if cell[v].ndim > 0]


def encode(cell: xr.Dataset, kind: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files, record): the cell's files {relative key: bytes}, `.complete.json` included, and its
    index record. `kind` is "cells" (scores) or "orders" (dropping orders).

    The labels (model, step, dataset, tokens) and provenance are group attributes; the files that only
    depend on the cell's shape (each array's zarr.json, the layer/module/sample coordinates) are
    written by xarray once per shape and reused; each value array's one chunk is its bytes, little
    endian, C order: what zarr's `bytes` codec holds (`decode` reads every cell back through zarr)."""
    model, step, dataset = labels_of(cell)
    tokens = float(cell["tokens"].item()) if "tokens" in cell.coords else float("nan")
    provenance = {k: str(cell[k].item()) for k in PROVENANCE if k in cell}
    body = cell.drop_vars([k for k in (*PROVENANCE, *_LABELS) if k in cell.variables])
    values = _value_vars(body)
    files = dict(_static_files(body))
    attrs = {**body.attrs, _LABEL_ATTR: {"model": model, "step": step, "dataset": dataset,
                                         "tokens": None if np.isnan(tokens) else tokens}}
    if provenance:
        attrs[_PROV_ATTR] = provenance
    files["zarr.json"] = json.dumps({"attributes": attrs, "zarr_format": 3, "consolidated_metadata": None,
                                     "node_type": "group"}, indent=2).encode()
    for v in values:
        data = np.ascontiguousarray(body[v].values, dtype=body[v].dtype.newbyteorder("<"))
        files[f"{v}/{_CHUNK}"] = data.tobytes()
    files = dict(sorted(files.items()))
    complete = {"format": CELL_FORMAT, "kind": kind, "model": model, "step": step, "dataset": dataset,
                "files": {k: [len(v), digest(v)] for k, v in files.items()}}
    files[COMPLETE] = json.dumps(complete, sort_keys=True).encode()
    return files, make_record(kind, cell, complete=complete, complete_digest=digest(files[COMPLETE]),
                              provenance=provenance)


_LABELS = ("model", "step", "dataset", "tokens")
_LABEL_ATTR = "redundancy_cell"
_TEMPLATES: dict[Any, dict[str, bytes]] = {}


def _static_files(body: xr.Dataset) -> dict[str, bytes]:
    """Every file of `body`'s zarr group but the group's zarr.json and the value arrays' chunks, as
    xarray writes them (one uncompressed chunk per value array); cached per shape and coordinates."""
    import zarr

    values = _value_vars(body)
    key = (tuple((v, body[v].dims, body[v].shape, body[v].dtype.str) for v in values),
           tuple((c, body[c].dtype.str, body[c].values.tobytes() if body[c].dtype != object
                  else tuple(map(str, body[c].values))) for c in body.coords))
    if key not in _TEMPLATES:
        mem = zarr.storage.MemoryStore()
        zeros = body.copy(data={v: np.zeros(body[v].shape, body[v].dtype) for v in body.data_vars})
        zeros.attrs = {}
        encoding = {v: {"compressors": None, "filters": None, "chunks": body[v].shape} for v in values}
        zeros.to_zarr(mem, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
        _TEMPLATES[key] = {k: b.to_bytes() for k, b in mem._store_dict.items()
                           if k != "zarr.json" and not any(k == f"{v}/{_CHUNK}" for v in values)}
    return _TEMPLATES[key]


def make_record(kind: str, cell: xr.Dataset, complete: dict[str, Any], complete_digest: str,
                provenance: dict[str, str]) -> dict[str, Any]:
    """What a reader needs of one cell, without opening it (see `_index`)."""
    files = complete["files"]
    tokens = float(cell["tokens"].item()) if "tokens" in cell.coords else float("nan")
    record: dict[str, Any] = {
        "kind": kind, "model": complete["model"], "step": complete["step"], "dataset": complete["dataset"],
        "complete": complete_digest, "tokens": None if np.isnan(tokens) else tokens,
        "provenance": provenance, "arrays": {},
    }
    for v in _value_vars(cell):
        meta, chunk = f"{v}/zarr.json", f"{v}/{_CHUNK}"
        record["arrays"][v] = {"name": v, "shape": list(cell[v].shape),
                               "dtype": cell[v].dtype.str, "meta": files[meta][1],
                               "chunk": files[chunk][1] if chunk in files else None}
    if kind == "orders":  # small: kept whole in the index, so opening reads no order cell
        record["orders"] = {"strategy": [str(s) for s in cell["strategy"].values],
                            "module": [str(m) for m in cell["module"].values],
                            "drop_order": cell["drop_order"].values.tolist(),
                            "metric": cell.attrs.get("metric")}
    return record


def decode(files: dict[str, bytes]) -> xr.Dataset:
    """A cell's files (any format) -> the cell as `make_cell` built it, loaded: labels as scalar
    coordinates and provenance strings as scalar variables again."""
    import zarr

    mem = zarr.storage.MemoryStore()
    proto = zarr.core.buffer.default_buffer_prototype()
    mem._store_dict.update({k: proto.buffer.from_bytes(v) for k, v in files.items() if k != COMPLETE})
    return restore(xr.open_zarr(mem, consolidated=False, zarr_format=3).load())


def restore(ds: xr.Dataset) -> xr.Dataset:
    """A format-2 cell as read by xarray -> its labels as coordinates, its provenance as variables
    (format-1 cells hold both as arrays already: returned as they are)."""
    labels = ds.attrs.pop(_LABEL_ATTR, None)
    provenance = ds.attrs.pop(_PROV_ATTR, None)
    if labels is not None:
        tokens = np.float64(np.nan if labels["tokens"] is None else labels["tokens"])
        ds = ds.assign_coords(model=np.array(labels["model"], dtype=object), step=int(labels["step"]),
                              dataset=np.array(labels["dataset"], dtype=object), tokens=tokens)
    if provenance is not None:
        for key in PROVENANCE:
            ds[key] = ((), np.array(str((provenance or {}).get(key, "")), dtype=object))
    return ds


def read_chunk(record_array: dict[str, Any], meta: bytes | None, chunk: bytes | None,
               where: str) -> np.ndarray:
    """One metric of a format-2 cell from its two files, checked against the index record; raises
    CellChanged naming what differs (a missing file, other bytes)."""
    if meta is None or (chunk is None and record_array["chunk"] is not None):
        raise CellChanged(f"{where}: {'zarr.json' if meta is None else 'its chunk'} is missing")
    if digest(meta) != record_array["meta"]:
        raise CellChanged(f"{where}/zarr.json changed since it was written")
    shape, dtype = tuple(record_array["shape"]), np.dtype(record_array["dtype"])
    if chunk is None:  # zarr writes no chunk that is all fill value (NaN)
        return np.full(shape, np.nan, dtype=dtype)
    if digest(chunk) != record_array["chunk"]:
        raise CellChanged(f"{where}: its chunk changed since it was written")
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).reshape(shape).astype(dtype)


class CellChanged(Exception):
    """A cell's bytes differ from what its writer recorded (internal: callers say what to do)."""


def chunk_keys(prefix: str, var: str) -> tuple[str, str]:
    return f"{prefix}/{var}/zarr.json", f"{prefix}/{var}/{_CHUNK}"
