"""Dropping orders: which layers go first, for one module type or jointly, and their baselines.

An order is an integer DataArray over a new `rank` dim: the layer dropped at each rank, lowest
importance first. Positions past a model's depth (NaN scores) hold -1.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from redundancy.orders import drop_order, joint_order, order_kernel  # noqa: F401 - one home, re-exported


def reverse_order(scores: xr.DataArray, dim: str = "layer") -> xr.DataArray:
    """Baseline: deepest layer first (only layers with a score)."""
    depth = scores[dim].where(scores.notnull())
    return drop_order(-depth.astype(float), dim)


def random_order(scores: xr.DataArray, dim: str = "layer", seed: int = 0) -> xr.DataArray:
    """Baseline: a seeded random order (only layers with a score), the same for every other index."""
    rng = np.random.default_rng(seed)
    noise = xr.DataArray(rng.permutation(scores.sizes[dim]).astype(float), dims=[dim],
                         coords={dim: scores[dim]})
    return drop_order(noise.where(scores.notnull()), dim)


def drop_sets(order: xr.DataArray, dim: str = "layer", labels: np.ndarray | None = None) -> xr.DataArray:
    """Boolean (..., k, dim): is the layer among the first k dropped? k runs 0..n."""
    labels = np.arange(order.sizes["rank"]) if labels is None else labels
    n_k = order.sizes["rank"] + 1  # k runs 0..n
    k = xr.DataArray(np.arange(n_k), dims=["k"], coords={"k": np.arange(n_k)})
    lab = xr.DataArray(labels, dims=[dim], coords={dim: labels})
    first_k = order.where(order["rank"] < k, -2)  # (..., rank, k): entries ranked below k
    return (first_k == lab).any("rank")


def order_grid(scores: xr.DataArray, dim: str = "layer") -> xr.DataArray:
    """Dropping-order grid (k, layer) for a 1-D score over `dim`: True where dropped at count k."""
    return drop_sets(drop_order(scores, dim), dim, scores[dim].values)
