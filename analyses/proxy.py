"""Proxy against truth: does the cosine importance rank modules as their measured cost does?

Any two metric variables of the cube (importance, loss_delta, kl, loss_delta_grad, ...) compared
per (model, step, module, dataset): rank correlation across layers, and the overlap of the k-drop
sets each would choose. Torch-free; labelled in, labelled out.
"""
from __future__ import annotations

import xarray as xr

from .orders import drop_order, drop_sets
from .stability import jaccard, rank_correlation


def metric_agreement(cube: xr.Dataset, a: str = "importance", b: str = "loss_delta", dim: str = "layer",
                     sample_dim: str = "sample", method: str = "spearman") -> xr.Dataset:
    """`rank_correlation` of the sample means of metrics `a` and `b` along `dim`, and `overlap`:
    the Jaccard overlap of their k-drop sets for every k (over a new dim `k`)."""
    x, y = (cube[m].mean(sample_dim) if sample_dim in cube[m].dims else cube[m] for m in (a, b))
    sets_x = drop_sets(drop_order(x, dim), dim, x[dim].values)
    sets_y = drop_sets(drop_order(y, dim), dim, y[dim].values)
    return xr.Dataset({"rank_correlation": rank_correlation(x, y, dim=dim, method=method),
                       "overlap": jaccard(sets_x, sets_y, dim)}, attrs={"metrics": f"{a} vs {b}"})


def proxy_scatter(final: xr.Dataset, a: str = "importance", b: str = "loss_delta", *, title: str,
                  modules=("block", "attn", "mlp"), sample_dim: str = "sample", skip_first: bool = True):
    """Per module, metric `a` against metric `b` at one step, one point per layer (labelled); layer 0
    left out by default, as the heatmaps draw it apart (it dwarfs the rest on both axes)."""
    import matplotlib.pyplot as plt

    from .figures import MODULE_TITLES

    final = final.sel(layer=final.layer > 0) if skip_first else final
    fig, axes = plt.subplots(1, len(modules), figsize=(4.2 * len(modules), 3.8), squeeze=False)
    for ax, mod in zip(axes[0], modules):
        x, y = (final[m].sel(module=mod).mean(sample_dim) for m in (a, b))
        ax.scatter(x, y, s=18)
        for layer, xi, yi in zip(x["layer"].values, x.values, y.values):
            ax.annotate(str(layer), (xi, yi), fontsize=7, xytext=(3, 2), textcoords="offset points")
        rho = float(rank_correlation(x, y, dim="layer"))
        ax.set_title(f"{MODULE_TITLES[mod]} (Spearman {rho:.2f})")
        ax.set_xlabel(a + (" (layers 1+)" if skip_first else ""))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{b} (nats)" if b.startswith("loss") or b == "kl" else b)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def agreement_over_steps(cube: xr.Dataset, pairs, *, title: str, module: str = "attn", k: int = 2,
                         skip_first: bool = True):
    """Spearman and k-drop overlap of each metric pair against training step, one line per pair
    (layers 1+ by default: layer 0 tops every metric and would inflate the agreement)."""
    import matplotlib.pyplot as plt

    cube = cube.sel(layer=cube.layer > 0) if skip_first else cube
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for a, b in pairs:
        agree = metric_agreement(cube.sel(module=module), a, b)
        axes[0].plot(cube["step"], agree["rank_correlation"], marker="o", label=f"{a} vs {b}")
        axes[1].plot(cube["step"], agree["overlap"].sel(k=k), marker="o", label=f"{a} vs {b}")
    axes[0].set_ylabel("Spearman across layers" + (" 1+" if skip_first else ""))
    axes[1].set_ylabel(f"overlap of the {k}-drop sets (Jaccard)")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
