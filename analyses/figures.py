"""The study's figures, drawn from labelled arrays. No torch here."""
from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

MODULE_TITLES = {"block": "block", "attn": "attention", "mlp": "MLP"}


def _step_labels(da: xr.DataArray, flags: xr.DataArray | None = None) -> list[str]:
    tokens = da["tokens"].values if "tokens" in da.coords else [np.nan] * da.sizes["step"]
    notes = [""] * da.sizes["step"] if flags is None else [
        f" [{n}]" if n else "" for n in flags.reindex(step=da["step"], fill_value="").values]
    starts = dict(_stage_starts(da))
    return [(f"{starts[i]}: " if i in starts else "")
            + (f"{s}" if not np.isfinite(t) else f"{s} ({_human(t)} tok)") + note
            for i, (s, t, note) in enumerate(zip(da["step"].values, tokens, notes))]


def _stage_starts(da: xr.DataArray) -> list[tuple[int, str]]:
    """(row, stage) where each training stage begins, for histories with more than one stage."""
    if "stage" not in da.coords or da["stage"].dims != ("step",):
        return []
    stages = [str(v) for v in da["stage"].values]
    starts = [(i, st) for i, st in enumerate(stages) if st and (i == 0 or st != stages[i - 1])]
    return starts if len(starts) > 1 else []


_SHORT = {"identical_to_final": "= final?", "duplicate_of": "copy of {}",
          "partial_duplicate_of": "shares files", "config_drift": "config drift"}


def step_flags(cell: xr.Dataset) -> xr.DataArray:
    """Short notes per step from a cube's integrity flags (one model and dataset): "" where none."""
    notes = []
    for i in range(cell.sizes["step"]):
        at = cell.isel(step=i)
        found = [k for k in _SHORT if k in cell and str(at[k].values) not in ("", "nan", "None")]
        if "identical_to_final" in found:
            found.remove("duplicate_of") if "duplicate_of" in found else None
        notes.append(", ".join(_SHORT[k].format(at[k].values) for k in found))
    return xr.DataArray(np.array(notes, dtype=object), coords={"step": cell["step"].values}, dims="step")


def _human(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def step_layer_heatmap(importance: xr.DataArray, *, title: str, metric: str = "importance",
                       dim: str = "sample", flags: xr.DataArray | None = None) -> plt.Figure:
    """Heatmaps over (step, layer), one column per module, layer 0 apart on its own colour scale.

    `importance` has dims (step, layer, module[, dim]); `dim` is averaged away if present.
    Layers 1.. share one scale across modules so attention and MLP compare directly. `flags`
    (from `step_flags`) marks suspect steps in brackets after their labels; where a `stage`
    coordinate holds several training stages, a white line marks where each begins.
    """
    da = importance.mean(dim) if dim in importance.dims else importance
    da = da.dropna("layer", how="all").transpose("step", "layer", "module")
    modules = [m for m in ("block", "attn", "mlp") if m in da["module"].values]
    rest = da.sel(layer=da.layer > 0)
    first = da.sel(layer=0)
    vmax, vmax0 = float(rest.max()), float(first.max())
    n_steps, n_layers = da.sizes["step"], da.sizes["layer"]
    # per module: [layer 0 | layers 1.. | gap]; the gap keeps modules apart
    # colour bars get columns of their own: [gap | bar layer 0 | gap | bar layers 1+]
    ratios = sum(([1.0, max(n_layers - 1, 1), 0.7] for _ in modules), []) + [0.3, 1.3, 0.3]
    fig, axes = plt.subplots(1, len(ratios), figsize=(3.6 * len(modules) + 3.5, 1.4 + 0.32 * n_steps),
                             gridspec_kw=dict(width_ratios=ratios, wspace=0.06), squeeze=False)
    for gap in [*axes[0, 2:-3:3], axes[0, -2]]:
        gap.set_visible(False)
    labels = _step_labels(da, flags)
    for i, mod in enumerate(modules):
        ax0, ax = axes[0, 3 * i], axes[0, 3 * i + 1]
        im0 = ax0.imshow(first.sel(module=mod).values[:, None], aspect="auto", cmap="magma",
                         vmin=0, vmax=vmax0, origin="lower")
        im = ax.imshow(rest.sel(module=mod).values, aspect="auto", cmap="viridis", vmin=0, vmax=vmax,
                       origin="lower", extent=(0.5, n_layers - 0.5, -0.5, n_steps - 0.5))
        for row, _ in _stage_starts(da)[1:]:  # a line where each later stage begins
            for a in (ax0, ax):
                a.axhline(row - 0.5, color="white", lw=2)
        ax0.set_xticks([0], ["0"])
        ax0.set_yticks(range(n_steps), labels if i == 0 else [])
        ax.set_yticks([])
        ax.set_xticks(range(1, n_layers, max(1, (n_layers - 1) // 8)))
        ax.set_title(MODULE_TITLES[mod], fontsize=11)
        ax.set_xlabel("layer")
    axes[0, 0].set_ylabel("checkpoint: step (tokens seen)")
    fig.colorbar(im0, cax=axes[0, -3], label=f"{metric}, layer 0")
    fig.colorbar(im, cax=axes[0, -1], label=f"{metric}, layers 1+")
    fig.suptitle(title, fontsize=12, y=1 + 0.35 / fig.get_figheight())  # above the module titles
    return fig


def save(fig: plt.Figure, path: Path) -> list[Path]:
    """Save as PNG and PDF beside each other; returns both paths. Each file is drawn in memory and
    written under a temporary name, then renamed: a killed run leaves the previous figure whole,
    never a truncated one. The folder is marked as figures (`.figures.json`), so that writers of other
    kinds refuse it and figures may be redrawn into it."""
    from redundancy._atomic import atomic_file
    from redundancy._stores import FIGURES_FORMAT, FIGURES_MARKER

    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        data = io.BytesIO()
        fig.savefig(data, format=p.suffix[1:], dpi=150, bbox_inches="tight")
        atomic_file(p, data.getvalue())
    plt.close(fig)
    marker = path.parent / FIGURES_MARKER  # once; the same whoever writes it
    if not marker.exists():
        atomic_file(marker, json.dumps(FIGURES_FORMAT))
    return out


def loss_curve(steps: np.ndarray, tokens: np.ndarray, loss: np.ndarray, *, title: str) -> plt.Figure:
    """Training loss against tokens seen (log x)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(tokens, loss, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig
