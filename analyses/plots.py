"""Line and grid figures of the study: importance per layer, dropping orders, sample counts,
rank-correlation matrices, one-shot vs iterative. Each takes labelled arrays, returns a Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from .figures import MODULE_TITLES
from .orders import drop_sets


def importance_per_layer(imp: xr.DataArray, *, title: str, modules=("attn", "mlp"),
                         hue: str = "dataset", metric: str = "importance") -> plt.Figure:
    """One panel per module, importance against layer, one line per `hue` label (log y)."""
    fig, axes = plt.subplots(1, len(modules), figsize=(5 * len(modules), 3.6), squeeze=False, sharey=True)
    for ax, mod in zip(axes[0], modules):
        for label in imp[hue].values:
            ax.plot(imp["layer"], imp.sel(module=mod, **{hue: label}), marker="o", ms=3, label=str(label))
        ax.set_title(MODULE_TITLES[mod])
        ax.set_xlabel("layer")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{metric} (log scale)")
    axes[0, -1].legend(title=hue, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def order_grid(order: xr.DataArray, *, title: str, modules=("block", "attn", "mlp")) -> plt.Figure:
    """Per module, rows: number dropped k, columns: layer; dark = dropped."""
    fig, axes = plt.subplots(1, len(modules), figsize=(3.8 * len(modules), 3.6), squeeze=False)
    for ax, mod in zip(axes[0], modules):
        o = order.sel(module=mod)
        n = int((o >= 0).sum())
        grid = drop_sets(o.isel(rank=slice(0, n)), "layer", np.arange(n)).transpose("k", "layer")
        ax.imshow(grid.values, cmap="Greys", vmin=0, vmax=1.4, origin="lower", aspect="auto")
        ax.set_title(f"{MODULE_TITLES[mod]} (dark: dropped)")
        ax.set_xlabel("layer")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n + 1))
    axes[0, 0].set_ylabel("number of layers dropped")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def sample_count(boot: xr.Dataset, *, title: str, layers=None, metric: str = "importance") -> plt.Figure:
    """Importance against number of samples (log x), with bootstrap intervals, one line per layer
    (layers 1+ by default: layer 0 dwarfs them, as in the heatmaps)."""
    layers = boot["layer"].values[boot["layer"].values > 0] if layers is None else layers
    mods = list(boot["module"].values)
    fig, axes = plt.subplots(1, len(mods), figsize=(4.6 * len(mods), 3.6), squeeze=False)
    for ax, mod in zip(axes[0], mods):
        for layer in layers:
            b = boot.sel(module=mod, layer=layer)
            line, = ax.plot(b["n_samples"], b["mean"], marker=".", label=f"layer {layer}")
            ax.fill_between(b["n_samples"], b["low"], b["high"], color=line.get_color(), alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("calibration samples")
        ax.set_title(MODULE_TITLES[mod])
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{metric}, mean and 90% bootstrap interval")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def corr_matrix(corr: xr.DataArray, *, title: str, across: str = "dataset") -> plt.Figure:
    """Dataset x dataset rank correlation, one panel per module, annotated."""
    mods = list(corr["module"].values)
    labels = [str(v) for v in corr[across].values]
    fig, axes = plt.subplots(1, len(mods), figsize=(3.4 * len(mods) + 1, 3.4), squeeze=False)
    for ax, mod in zip(axes[0], mods):
        m = corr.sel(module=mod).transpose(across, f"{across}_2").values
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(v) > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(MODULE_TITLES[mod])
    fig.colorbar(im, ax=list(axes[0]), label="Spearman rank correlation", fraction=0.03)
    fig.suptitle(title)
    return fig


def one_shot_vs_iterative(order: xr.DataArray, *, title: str, modules=("block", "attn", "mlp")) -> plt.Figure:
    """Per module: the layer dropped at each rank, one-shot vs iterative; disagreements circled."""
    fig, axes = plt.subplots(1, len(modules), figsize=(4 * len(modules), 3.6), squeeze=False)
    for ax, mod in zip(axes[0], modules):
        o = order.sel(module=mod)
        a, b = o.sel(strategy="one-shot").values, o.sel(strategy="iterative").values
        keep = (a >= 0) & (b >= 0)
        ranks = np.arange(len(a))[keep]
        ax.plot(ranks, a[keep], "o-", label="one-shot")
        ax.plot(ranks, b[keep], "s--", label="iterative", alpha=0.8)
        diff = ranks[a[keep] != b[keep]]
        ax.scatter(diff, b[keep][a[keep] != b[keep]], s=160, facecolors="none", edgecolors="red",
                   label="differs")
        ax.set_xlabel("drop rank (0 = dropped first)")
        ax.set_title(MODULE_TITLES[mod])
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("layer dropped")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


QUANT_MARKERS = {"awq": "D", "gptq": "s"}  # open diamond, open square
KIND_LABELS = {"attn": "Attn-k (attention)", "mlp": "MLP-k", "block": "Block-k (whole layers)",
               "joint": "Joint-k (attention or MLP)"}


def accuracy_vs_dropped(row: xr.Dataset, *, title: str, metric: str = "average",
                        threshold: float = 95.0) -> plt.Figure:
    """Score against number dropped, one line per kind of plan, from the results store's rows of one
    (model, step) (variables `metric`, `kind`, `n_dropped`, `quant` over `plan`). The baseline starts
    every line at 0; quantized plans are drawn as open markers; the dashed line is `threshold` %.
    Where the store holds `{metric}_stderr` (lm-eval's standard errors), each point gets its error bar."""
    base = float(row[metric].sel(plan="baseline"))
    se = row[f"{metric}_stderr"] if f"{metric}_stderr" in row else None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind, label in KIND_LABELS.items():
        sel = row.where((row["kind"] == kind) & (row["quant"] == "none"), drop=True)
        if sel.sizes.get("plan", 0):
            sel = sel.sortby("n_dropped")
            yerr = None if se is None else [float(se.sel(plan="baseline")), *se.sel(plan=sel["plan"]).values]
            line = ax.errorbar([0, *sel["n_dropped"].values], [base, *sel[metric].values],
                               yerr=yerr, fmt="o-", capsize=3, label=label).lines[0]
            q = row.where((row["kind"] == kind) & (row["quant"] != "none"), drop=True)
            for plan in q["plan"].values if q.sizes.get("plan", 0) else []:
                ax.scatter(q["n_dropped"].sel(plan=plan), q[metric].sel(plan=plan), s=90, facecolors="none",
                           marker=QUANT_MARKERS.get(str(q["quant"].sel(plan=plan).item()), "o"),
                           edgecolors=line.get_color(), label=f"{plan} (4-bit)")
    ax.axhline(base * threshold / 100, ls="--", c="grey", lw=1, label=f"{threshold:g}% of baseline")
    ax.set_xlabel("modules dropped (k; Block-k: layers)")
    ax.set_ylabel(f"{metric} accuracy (lm-eval)" + (", ± standard error" if se is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
