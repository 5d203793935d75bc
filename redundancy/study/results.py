"""The results store: evaluation scores and generation speed per (model, step, plan).

Variables: `score` and `score_stderr` (model, step, plan, task); `perplexity` on held-out windows
(model, step, plan, dataset); `tokens_per_s`, `seconds` (median), `kv_cache_bytes`,
`peak_memory_bytes` (model, step, plan) and `seconds_each` (model, step, plan, repeat); what each
plan is, over `plan`: `kind` (baseline, attn, mlp, block, joint, custom), `n_dropped` (modules
dropped), `quant` (none, awq, gptq).
`open_results` adds `average` (and `average_stderr`), `pct_of_baseline`, `speedup` with the range
its repeats allow (`speedup_low`, `speedup_high`; `speedup_noise` where that range covers 1.0) and
`gamma` (the study's SDR, undefined where nothing is gained or the speedup is noise), each against
the plan named "baseline".

Layout: STORE/current -> STORE/v-<id>, a zarr group holding every row. Small, so a write reads it
whole under an inter-process lock, writes a new version beside it and swaps the `current` link
(one atomic rename): a kill at any instant leaves the old or the new version current, never none,
and concurrent writers never lose a row. Stores written before this layout (a zarr group at STORE
itself) are read, and converted on their next write.
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

from .._atomic import atomic_dir, locked
from ..errors import StoreError

BASELINE = "baseline"
SPEED_VARS = ("tokens_per_s", "seconds", "kv_cache_bytes", "peak_memory_bytes")
ROW = ("model", "step", "plan")
KIND_ORDER = ("baseline", "block", "mlp", "attn", "joint", "custom")  # the study's Table 1 order


def _per(coords: dict, dim: str, values: dict[Any, float], keys: list | None = None) -> xr.DataArray:
    """One row's values over a further dimension `dim` (task, dataset, repeat), NaN where absent."""
    keys = keys if keys is not None else sorted(values)
    data = np.array([values.get(k, np.nan) for k in keys], dtype=float)[None, None, None]
    return xr.DataArray(data, dims=(*ROW, dim), coords={**coords, dim: keys})


def _row(model: str, step: int, plan: str, scores: dict[str, float] | None, speed: dict[str, Any] | None,
         meta: dict[str, Any], stderr: dict[str, float] | None = None,
         perplexity: dict[str, float] | None = None) -> xr.Dataset:
    coords = {"model": [model], "step": [step], "plan": [plan]}
    ds = xr.Dataset(coords=coords)
    if scores:
        ds["score"] = _per(coords, "task", scores)
        if stderr:
            ds["score_stderr"] = _per(coords, "task", stderr, sorted(scores))
    if perplexity:
        ds["perplexity"] = _per(coords, "dataset", perplexity)
    for var in SPEED_VARS if speed else ():
        ds[var] = (ROW, np.full((1, 1, 1), np.nan if speed.get(var) is None else float(speed[var])))
    if speed and speed.get("seconds_each"):
        ds["seconds_each"] = _per(coords, "repeat", dict(enumerate(speed["seconds_each"])))
    for key, value in meta.items():
        ds[key] = ("plan", np.array([value], dtype=object if isinstance(value, str) else int))
    return ds


def write_results(path: str | Path, model: str, step: int, plan: str,
                  scores: dict[str, float] | None = None, speed: dict[str, Any] | None = None, *,
                  kind: str | None = None, n_dropped: int | None = None,
                  quant: str = "none", stderr: dict[str, float] | None = None,
                  perplexity: dict[str, float] | None = None) -> xr.Dataset:
    """Add or update one (model, step, plan) row: given values replace stored ones, others are kept.
    `stderr`: lm-eval's standard error of each task's score (stored as `score_stderr`);
    `perplexity`: calibration set -> perplexity on its held-out windows."""
    path = Path(path)
    kind = kind or (BASELINE if plan == BASELINE else "custom")
    meta = dict(kind=kind, n_dropped=n_dropped or 0, quant=quant)
    new = _row(model, step, plan, scores, speed, meta, stderr, perplexity)
    with locked(path):
        current = _current(path)
        if current is not None:
            new = _objects(new).combine_first(_objects(xr.open_zarr(str(current), consolidated=False).load()))
        if current == path:  # the old single-group layout: rebuilt in the new one beside it
            with atomic_dir(path, overwrite=True) as tmp:
                _publish_version(tmp, _objects(new))
        else:
            path.mkdir(parents=True, exist_ok=True)
            _publish_version(path, _objects(new))
    return open_results(path)


def _current(path: Path) -> Path | None:
    """The version holding the rows: STORE/current's target, STORE itself (old layout), or None."""
    if (path / "current").is_symlink():
        return path / "current"
    if (path / "zarr.json").exists():
        return path
    if path.exists() and (not path.is_dir() or any(p for p in path.iterdir() if not p.name.startswith("."))):
        raise StoreError(f"{path} exists but is not a results store; choose another --out")
    return None


def _publish_version(store: Path, ds: xr.Dataset) -> None:
    """Write `ds` as a new version of `store`, point `current` at it, remove every other version."""
    version = store / f"v-{uuid.uuid4().hex[:12]}"
    with atomic_dir(version) as tmp:
        ds.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=False)
    link = store / f".current-{uuid.uuid4().hex[:8]}"
    os.symlink(version.name, link)
    os.replace(link, store / "current")  # the switch: one rename
    for old in store.glob("v-*"):
        if old.name != version.name:
            shutil.rmtree(old, ignore_errors=True)
    for stray in store.glob(".current-*"):  # links of writers killed before their switch
        stray.unlink(missing_ok=True)
    for stray in store.glob(".v-*"):  # versions of killed writers (the lock is ours: nobody else writes)
        shutil.rmtree(stray, ignore_errors=True)


def _objects(ds: xr.Dataset) -> xr.Dataset:
    """Strings as object arrays: zarr's vlen strings append longer names and align with NaN fills."""
    strings = [n for n in ds.variables if ds[n].dtype.kind in "UT"]
    return ds.assign({n: ds[n].astype(object) for n in strings if n not in ds.coords}).assign_coords(
        {n: ds[n].values.astype(object) for n in strings if n in ds.coords})


def has_results(path: str | Path) -> bool:
    """True when `path` is a results store holding rows."""
    path = Path(path)
    return (path / "current").is_symlink() or (path / "zarr.json").exists()


def open_results(path: str | Path) -> xr.Dataset:
    """The store with `average`, `pct_of_baseline`, `speedup` and `gamma` against the baseline plan."""
    path = Path(path)
    current = _current(path) if path.is_dir() else None
    if current is None:
        raise StoreError(f"{path} is not a results store; write one with "
                         "`redundancy study` or `redundancy evaluate --out`")
    with locked(path):  # a writer replacing the version cannot pull it away mid-read
        ds = _objects(xr.open_zarr(str(_current(path)), consolidated=False).load())
    if "score" in ds:
        ds["average"] = ds["score"].mean("task")
    if "score_stderr" in ds:  # tasks independent: the mean's standard error
        ds["average_stderr"] = np.sqrt((ds["score_stderr"] ** 2).sum("task", skipna=False)) / ds.sizes["task"]
    if BASELINE not in ds["plan"].values:
        return ds
    base = ds.sel(plan=BASELINE)
    if "average" in ds:
        ds["pct_of_baseline"] = 100 * ds["average"] / base["average"]
    if "tokens_per_s" in ds:
        ds["speedup"] = ds["tokens_per_s"] / base["tokens_per_s"]
    if "seconds_each" in ds:  # the range speedup_range gives: slowest against fastest, both ways
        each = ds["seconds_each"]
        ds["speedup_low"] = base["seconds_each"].min("repeat") / each.max("repeat")
        ds["speedup_high"] = base["seconds_each"].max("repeat") / each.min("repeat")
        ds["speedup_noise"] = (ds["speedup_low"] <= 1) & (ds["speedup_high"] >= 1)
    if "average" in ds and "speedup" in ds:
        gain = 100 * (ds["speedup"] - 1)  # gamma = (average drop %) / (speedup %): the study's SDR
        noise = ds["speedup_noise"] if "speedup_noise" in ds else xr.zeros_like(gain, dtype=bool)
        real = (gain > 0) & ~noise
        ds["gamma"] = (100 - ds["pct_of_baseline"]) / gain.where(real)
    return ds


def results_table(ds: xr.Dataset, model: str, step: int, threshold: float = 95.0) -> pd.DataFrame:
    """The study's Table 1 for one (model, step): one row per plan (baseline first, then by kind and
    count), task scores, held-out perplexity per set ("ppl SET"), average, % of baseline, speedup
    with its range, gamma, KV cache, and `below` (under `threshold` % of the baseline average)."""
    row = ds.sel(model=model, step=step)
    cols = [c for c in ("average", "average_stderr", "pct_of_baseline", "speedup", "speedup_low",
                        "speedup_high", "speedup_noise", "gamma", "kv_cache_bytes") if c in row]
    frame = row["score"].to_pandas() if "score" in row else pd.DataFrame(index=row["plan"].values)
    if "perplexity" in row:  # one column per calibration set: "ppl prose"
        frame = frame.join(row["perplexity"].to_pandas().rename(columns=lambda d: f"ppl {d}"))
    for c in cols:
        frame[c] = row[c].to_pandas()
    for c in ("kind", "n_dropped", "quant"):
        frame[c] = row[c].to_pandas()
    frame["below"] = frame.get("pct_of_baseline", pd.Series(100.0, index=frame.index)) < threshold
    labels = ("kind", "n_dropped", "quant", "below", "speedup_noise")  # not enough to keep a row
    frame = frame.dropna(how="all", subset=[c for c in frame.columns if c not in labels])
    frame["n_dropped"] = frame["n_dropped"].astype(int)
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    keys = frame.assign(_b=frame.index != BASELINE, _k=frame["kind"].map(lambda k: rank.get(k, len(rank))),
                        _q=frame["quant"] != "none")
    return frame.loc[keys.sort_values(["_b", "_k", "n_dropped", "_q", "quant"]).index]
