"""One-shot vs iterative dropping orders: rank agreement and overlap of the k-drop sets."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .orders import drop_sets
from .stability import jaccard, rank_correlation


def _positions(order: xr.DataArray, n: int) -> xr.DataArray:
    """rank of each layer in `order` (..., rank) -> (..., layer)."""
    layers = xr.DataArray(np.arange(n), dims=["layer"], coords={"layer": np.arange(n)})
    return (order == layers).argmax("rank").where((order == layers).any("rank"))


def strategy_agreement(order: xr.DataArray, a: str = "one-shot", b: str = "iterative",
                       dim: str = "strategy") -> xr.Dataset:
    """Spearman correlation of the two orders' layer positions, Jaccard overlap per k, and the
    first k where their k-drop sets differ (0 if they never do)."""
    n = int((order >= 0).sum("rank").max())
    oa, ob = order.sel({dim: a}, drop=True), order.sel({dim: b}, drop=True)
    corr = rank_correlation(_positions(oa, n), _positions(ob, n), dim="layer")
    labels = np.arange(n)
    overlap = jaccard(drop_sets(oa, "layer", labels), drop_sets(ob, "layer", labels))
    differs = overlap < 1
    first = differs["k"].where(differs).min("k").fillna(0).astype(int)
    return xr.Dataset({"spearman": corr, "overlap": overlap, "first_k_differing": first})


def describe(agreement: xr.Dataset, module_dim: str = "module") -> str:
    """One line per module: whether and where one-shot and iterative disagree."""
    lines = []
    for mod in agreement[module_dim].values:
        a = agreement.sel({module_dim: mod})
        k = int(a["first_k_differing"])
        lines.append(f"{mod}: " + ("one-shot and iterative agree at every k" if k == 0 else
                     f"they first differ at k={k} (overlap {float(a['overlap'].sel(k=k)):.2f}); "
                     f"rank correlation {float(a['spearman']):.2f}"))
    return "\n".join(lines)
