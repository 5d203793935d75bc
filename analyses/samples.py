"""How many calibration samples are enough: prefix means, bootstrap intervals, and the smallest
count whose k-drop set equals the full count's. All from stored per-sample values: no re-run."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .orders import drop_order, drop_sets


def _counts(n: int) -> np.ndarray:
    """1, 2, 4, ... up to n, and n itself."""
    c = 2 ** np.arange(int(np.log2(n)) + 1)
    return np.unique(np.append(c, n))


def prefix_means(per_sample: xr.DataArray, dim: str = "sample", counts=None) -> xr.DataArray:
    """Mean over the first n samples for each n in `counts`: dims (..., n_samples)."""
    counts = _counts(per_sample.sizes[dim]) if counts is None else np.asarray(counts)
    means = [per_sample.isel({dim: slice(0, int(n))}).mean(dim) for n in counts]
    return xr.concat(means, dim="n_samples").assign_coords(n_samples=counts)


def bootstrap_interval(per_sample: xr.DataArray, dim: str = "sample", counts=None, n_boot: int = 200,
                       ci: float = 0.9, seed: int = 0) -> xr.Dataset:
    """Mean and central `ci` interval of the mean of n resampled samples, for each n in `counts`."""
    counts = _counts(per_sample.sizes[dim]) if counts is None else np.asarray(counts)
    rng = np.random.default_rng(seed)
    total = per_sample.sizes[dim]
    out = []
    for n in counts:
        idx = xr.DataArray(rng.integers(0, total, size=(n_boot, int(n))), dims=["boot", dim])
        boots = per_sample.isel({dim: idx}).mean(dim)
        q = boots.quantile([(1 - ci) / 2, (1 + ci) / 2], dim="boot")
        out.append(xr.Dataset({"mean": per_sample.isel({dim: slice(0, int(n))}).mean(dim),
                               "low": q.isel(quantile=0, drop=True), "high": q.isel(quantile=1, drop=True)}))
    return xr.concat(out, dim="n_samples").assign_coords(n_samples=counts)


def samples_for_same_drop_set(per_sample: xr.DataArray, k: int, dim: str = "sample",
                              layer_dim: str = "layer", counts=None) -> xr.DataArray:
    """Smallest n (from `counts`) whose prefix mean gives the full count's k-drop set, and every
    larger n too. NaN if only the full count does."""
    means = prefix_means(per_sample, dim, counts)
    sets = drop_sets(drop_order(means, layer_dim), layer_dim, means[layer_dim].values).sel(k=k)
    same = (sets == sets.isel(n_samples=-1)).all(layer_dim)
    # stable from n on: every count >= n agrees
    stable = same.isel(n_samples=slice(None, None, -1)).cumprod("n_samples").isel(
        n_samples=slice(None, None, -1)).astype(bool)
    return means["n_samples"].where(stable).min("n_samples")
