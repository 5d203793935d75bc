"""Dropping orders: which layers go first, for one module type or jointly, and their baselines.

An order is an integer DataArray over a new `rank` dim: the layer dropped at each rank, lowest
importance first. Positions past a model's depth (NaN scores) hold -1.
"""
from __future__ import annotations

import numpy as np
import xarray as xr


def order_kernel(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """scores (..., n) -> labels sorted by ascending score along the last axis; NaN last as -1."""
    idx = np.argsort(np.where(np.isnan(scores), np.inf, scores), axis=-1, kind="stable")
    out = labels[idx]
    return np.where(np.take_along_axis(np.isnan(scores), idx, axis=-1), -1, out)


def drop_order(scores: xr.DataArray | xr.Dataset, dim: str = "layer", metric: str = "importance",
               sample_dim: str = "sample") -> xr.DataArray:
    """Labels of `dim` in the order they are dropped (lowest score first), over a new dim `rank`.

    `scores` is a DataArray, or a Dataset (the cube) from which `metric` is taken, averaged over
    `sample_dim`: `drop_order(cube, metric="loss_delta")` orders by measured loss."""
    if isinstance(scores, xr.Dataset):
        scores = scores[metric].mean(sample_dim) if sample_dim in scores[metric].dims else scores[metric]
    labels = scores[dim].values
    out = xr.apply_ufunc(order_kernel, scores, kwargs=dict(labels=labels), input_core_dims=[[dim]],
                         output_core_dims=[["rank"]], dask="parallelized",
                         dask_gufunc_kwargs=dict(output_sizes={"rank": len(labels)}),
                         output_dtypes=[labels.dtype])
    return out.assign_coords(rank=np.arange(len(labels)))


def joint_order(scores: xr.DataArray, modules: tuple[str, ...] = ("attn", "mlp"),
                dim: str = "layer", module_dim: str = "module") -> xr.Dataset:
    """Attention and MLP ranked in one list: a Dataset with `module` and `layer` over `rank`.

    Every entry is a labelled (module, layer) pair; entries beyond a model's depth are ("", -1).
    """
    flat = scores.sel({module_dim: list(modules)}).stack(unit=(module_dim, dim))
    units = np.arange(flat.sizes["unit"])
    pos = drop_order(flat.drop_vars(["unit", module_dim, dim]).assign_coords(unit=units), dim="unit")
    mods = np.asarray(flat[module_dim].values, dtype=object)
    layers = np.asarray(flat[dim].values)
    valid = pos >= 0
    safe = pos.where(valid, 0)
    module = xr.apply_ufunc(lambda p: mods[p], safe, dask="allowed").where(valid, "")
    layer = xr.apply_ufunc(lambda p: layers[p], safe, dask="allowed").where(valid, -1)
    return xr.Dataset({"module": module, "layer": layer.astype(int)})


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
