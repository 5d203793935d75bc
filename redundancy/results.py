"""The results store: evaluation scores and generation speed per (model, step, plan).

Variables: `score` (model, step, plan, task); `tokens_per_s`, `seconds`, `kv_cache_bytes`,
`peak_memory_bytes` (model, step, plan); what each plan is, over `plan`: `kind` (baseline, attn,
mlp, block, joint, custom), `n_dropped` (modules dropped), `quant` (none, awq, gptq).
`open_results` adds `average`, `pct_of_baseline`, `speedup` and `gamma` (the study's SDR), each
against the plan named "baseline". Small, so each write rewrites it whole and renames it into place.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import StoreError

BASELINE = "baseline"
SPEED_VARS = ("tokens_per_s", "seconds", "kv_cache_bytes", "peak_memory_bytes")
ROW = ("model", "step", "plan")
KIND_ORDER = ("baseline", "block", "mlp", "attn", "joint", "custom")  # the study's Table 1 order


def _row(model: str, step: int, plan: str, scores: dict[str, float] | None, speed: dict[str, Any] | None,
         meta: dict[str, Any]) -> xr.Dataset:
    coords = {"model": [model], "step": [step], "plan": [plan]}
    ds = xr.Dataset(coords=coords)
    if scores:
        tasks = sorted(scores)
        ds["score"] = xr.DataArray(np.array([scores[t] for t in tasks], dtype=float)[None, None, None],
                                   dims=(*ROW, "task"), coords={**coords, "task": tasks})
    for var in SPEED_VARS if speed else ():
        ds[var] = (ROW, np.full((1, 1, 1), np.nan if speed.get(var) is None else float(speed[var])))
    for key, value in meta.items():
        ds[key] = ("plan", np.array([value], dtype=object if isinstance(value, str) else int))
    return ds


def write_results(path: str | Path, model: str, step: int, plan: str, scores: dict[str, float] | None = None,
                  speed: dict[str, Any] | None = None, *, kind: str | None = None, n_dropped: int | None = None,
                  quant: str = "none") -> xr.Dataset:
    """Add or update one (model, step, plan) row: given values replace stored ones, others are kept."""
    path = Path(path)
    kind = kind or (BASELINE if plan == BASELINE else "custom")
    new = _row(model, step, plan, scores, speed, dict(kind=kind, n_dropped=n_dropped or 0, quant=quant))
    if (path / "zarr.json").exists():
        new = _objects(new).combine_first(_objects(xr.open_zarr(str(path), consolidated=False).load()))
    new = _objects(new)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    new.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=False)
    if path.exists():
        old_dir = path.with_name(f".{path.name}.old")
        os.replace(path, old_dir)
        os.replace(tmp, path)
        shutil.rmtree(old_dir, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return open_results(path)


def _objects(ds: xr.Dataset) -> xr.Dataset:
    """Strings as object arrays: zarr's vlen strings append longer names and align with NaN fills."""
    strings = [n for n in ds.variables if ds[n].dtype.kind in "UT"]
    return ds.assign({n: ds[n].astype(object) for n in strings if n not in ds.coords}).assign_coords(
        {n: ds[n].values.astype(object) for n in strings if n in ds.coords})


def open_results(path: str | Path) -> xr.Dataset:
    """The store with `average`, `pct_of_baseline`, `speedup` and `gamma` against the baseline plan."""
    if not (Path(path) / "zarr.json").exists():
        raise StoreError(f"{path} is not a results store (no zarr.json); write one with "
                         "`redundancy study` or `redundancy evaluate --out`")
    ds = _objects(xr.open_zarr(str(path), consolidated=False).load())
    if "score" in ds:
        ds["average"] = ds["score"].mean("task")
    if BASELINE not in ds["plan"].values:
        return ds
    base = ds.sel(plan=BASELINE)
    if "average" in ds:
        ds["pct_of_baseline"] = 100 * ds["average"] / base["average"]
    if "tokens_per_s" in ds:
        ds["speedup"] = ds["tokens_per_s"] / base["tokens_per_s"]
    if "average" in ds and "speedup" in ds:
        gain = 100 * (ds["speedup"] - 1)  # gamma = (average drop %) / (speedup %): the study's SDR
        ds["gamma"] = (100 - ds["pct_of_baseline"]) / gain.where(gain > 0)
    return ds


def results_table(ds: xr.Dataset, model: str, step: int, threshold: float = 95.0) -> pd.DataFrame:
    """The study's Table 1 for one (model, step): one row per plan (baseline first, then by kind and
    count), task scores, average, % of baseline, speedup, gamma, KV cache, and `below` (under
    `threshold` % of the baseline average)."""
    row = ds.sel(model=model, step=step)
    cols = [c for c in ("average", "pct_of_baseline", "speedup", "gamma", "kv_cache_bytes") if c in row]
    frame = row["score"].to_pandas() if "score" in row else pd.DataFrame(index=row["plan"].values)
    for c in cols:
        frame[c] = row[c].to_pandas()
    for c in ("kind", "n_dropped", "quant"):
        frame[c] = row[c].to_pandas()
    frame["below"] = frame.get("pct_of_baseline", pd.Series(100.0, index=frame.index)) < threshold
    frame = frame.dropna(how="all", subset=[c for c in frame.columns if c not in ("kind", "n_dropped", "quant", "below")])
    frame["n_dropped"] = frame["n_dropped"].astype(int)
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    keys = frame.assign(_b=frame.index != BASELINE, _k=frame["kind"].map(lambda k: rank.get(k, len(rank))),
                        _q=frame["quant"] != "none")
    return frame.loc[keys.sort_values(["_b", "_k", "n_dropped", "_q", "quant"]).index]
