"""Agreement of layer importances between calibration sets (or any other dim): rank correlation
and the overlap of the k-drop sets."""
from __future__ import annotations

import numpy as np
import scipy.stats
import xarray as xr

from .orders import drop_order, drop_sets


def rank_corr_kernel(a: np.ndarray, b: np.ndarray, method: str = "spearman") -> np.ndarray:
    """Rank correlation of a and b along the last axis, ignoring positions NaN in either."""
    fn = {"spearman": scipy.stats.spearmanr, "kendall": scipy.stats.kendalltau}[method]
    a2, b2 = np.broadcast_arrays(a, b)
    out = np.full(a2.shape[:-1], np.nan)
    for idx in np.ndindex(out.shape):
        ok = ~(np.isnan(a2[idx]) | np.isnan(b2[idx]))
        if ok.sum() >= 3:
            out[idx] = fn(a2[idx][ok], b2[idx][ok])[0]
    return out


def rank_correlation(a: xr.DataArray, b: xr.DataArray, dim: str = "layer",
                     method: str = "spearman") -> xr.DataArray:
    """Spearman or Kendall correlation of the ranks of a and b along `dim`."""
    return xr.apply_ufunc(rank_corr_kernel, a, b, kwargs=dict(method=method),
                          input_core_dims=[[dim], [dim]], dask="parallelized", output_dtypes=[float])


def pairwise(scores: xr.DataArray, across: str = "dataset", dim: str = "layer",
             method: str = "spearman") -> xr.DataArray:
    """Matrix of rank correlations between every pair along `across`: dims (..., across, across_2)."""
    other = scores.rename({across: f"{across}_2"})
    return rank_correlation(scores, other, dim=dim, method=method)


def jaccard(a: xr.DataArray, b: xr.DataArray, dim: str = "layer") -> xr.DataArray:
    """|A & B| / |A | B| of boolean sets along `dim` (1 where both are empty)."""
    inter, union = (a & b).sum(dim), (a | b).sum(dim)
    return xr.where(union > 0, inter / union.where(union > 0), 1.0)


def drop_set_overlap(scores: xr.DataArray, across: str = "dataset", dim: str = "layer") -> xr.DataArray:
    """Jaccard overlap of the k-drop sets between every pair along `across`: (..., k, across, across_2)."""
    sets = drop_sets(drop_order(scores, dim), dim, scores[dim].values)
    return jaccard(sets, sets.rename({across: f"{across}_2"}), dim)
