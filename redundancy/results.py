"""The results store: evaluation scores over (model, step, plan, task), with the average and the
percentage of the baseline plan. Small, so each write rewrites it whole and renames it into place."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import xarray as xr

BASELINE = "baseline"


def _row(model: str, step: int, plan: str, scores: dict[str, float]) -> xr.Dataset:
    tasks = sorted(scores)
    score = xr.DataArray(np.array([[[[scores[t] for t in tasks]]]], dtype=float),
                         dims=("model", "step", "plan", "task"),
                         coords={"model": [model], "step": [step], "plan": [plan], "task": tasks})
    return xr.Dataset({"score": score})


def open_results(path: str | Path) -> xr.Dataset:
    """The store with `average` over tasks and `pct_of_baseline` (100 x average / baseline's)."""
    ds = xr.open_zarr(str(path), consolidated=False).load()
    ds["average"] = ds["score"].mean("task")
    if BASELINE in ds["plan"].values:
        ds["pct_of_baseline"] = 100 * ds["average"] / ds["average"].sel(plan=BASELINE)
    return ds


def write_results(path: str | Path, model: str, step: int, plan: str, scores: dict[str, float]) -> xr.Dataset:
    """Add or replace one (model, step, plan) row; earlier rows are kept."""
    path = Path(path)
    new = _row(model, step, plan, scores)
    if (path / "zarr.json").exists():
        old = xr.open_zarr(str(path), consolidated=False)[["score"]].load()
        keep = old.where(~((old.model == model) & (old.step == step) & (old.plan == plan)))
        new = new.combine_first(keep)
    new = new.assign_coords({c: new[c].values.astype(object) for c in ("model", "plan", "task")})  # vlen strings
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
