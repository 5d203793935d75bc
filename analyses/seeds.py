"""Seeds: which redundancy is a property of the architecture and data, and which an accident of one
run. Each function takes scores with the runs along `dim` ("model" by default: the cube keeps each
run of a suite as a model, with `seed` and `seed_kind` coordinates) and returns labelled arrays.
"""
from __future__ import annotations

import xarray as xr

from .orders import drop_order, drop_sets
from .stability import pairwise


def seed_spread(scores: xr.DataArray, dim: str = "model") -> xr.Dataset:
    """Across runs, for every other coordinate: mean, std (n - 1), min, max, and cv = std / mean."""
    mean, std = scores.mean(dim), scores.std(dim, ddof=1)
    return xr.Dataset({"mean": mean, "std": std, "min": scores.min(dim), "max": scores.max(dim),
                       "cv": std / mean.where(mean != 0)})


def seed_rank_agreement(scores: xr.DataArray, dim: str = "model", over: str = "layer",
                        method: str = "spearman") -> xr.DataArray:
    """Mean rank correlation of the importances along `over` over every pair of distinct runs."""
    mat = pairwise(scores, across=dim, dim=over, method=method)  # (..., dim, dim_2)
    n = scores.sizes[dim]
    same = xr.DataArray(scores[dim].values, dims=dim) == xr.DataArray(scores[dim].values, dims=f"{dim}_2")
    return mat.where(~same).sum([dim, f"{dim}_2"]) / (n * (n - 1))


def seeds_agree(scores: xr.DataArray, k: int, dim: str = "model", over: str = "layer") -> xr.DataArray:
    """True where every run drops the same k layers (their k lowest scores along `over`)."""
    sets = drop_sets(drop_order(scores, over), over, scores[over].values).sel(k=k, drop=True)
    return (sets == sets.isel({dim: 0}, drop=True)).all([dim, over])


def first_step_seeds_agree(scores: xr.DataArray, k: int, dim: str = "model", over: str = "layer",
                           along: str = "step") -> xr.DataArray:
    """First step from which all runs agree on the k-drop set at it and at every later step (NaN if never)."""
    agree = seeds_agree(scores, k, dim, over)
    later = agree.isel({along: slice(None, None, -1)}).cumprod(along).isel({along: slice(None, None, -1)})
    return scores[along].where(later.astype(bool)).min(along)


def seed_band(imp: xr.DataArray, steps, *, title: str, dim: str = "model", modules=("attn", "mlp"),
              metric: str = "importance"):
    """Importance per layer at the chosen steps: the mean over runs as a line, min..max as a band.

    `imp` has dims (dim, step, layer, module); `steps` are values of `step`. One panel per module.
    """
    import matplotlib.pyplot as plt

    from .figures import MODULE_TITLES, _human

    fig, axes = plt.subplots(1, len(modules), figsize=(5 * len(modules), 3.6), squeeze=False, sharey=True)
    spread = seed_spread(imp.sel(step=list(steps)), dim)
    for ax, mod in zip(axes[0], modules):
        for step in steps:
            s = spread.sel(step=step, module=mod).dropna("layer", how="all")
            tokens = float(imp["tokens"].sel(step=step).max()) if "tokens" in imp.coords else float("nan")
            label = f"step {step}" + (f" ({_human(tokens)} tok)" if tokens == tokens else "")
            line, = ax.plot(s["layer"], s["mean"], marker="o", ms=3, label=label)
            ax.fill_between(s["layer"], s["min"], s["max"], color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(MODULE_TITLES[mod])
        ax.set_xlabel("layer")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{metric}, mean over {imp.sizes[dim]} runs (log)")
    axes[0, -1].legend(fontsize=8, title="band: min..max over runs", title_fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
