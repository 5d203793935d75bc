"""Draw every figure of the study for every model of a cube, into one folder (PNG and PDF)."""
from __future__ import annotations

from pathlib import Path

import xarray as xr

from redundancy.orders import drop_order, final_step  # noqa: F401 - final_step re-exported

from . import plots
from .figures import save, step_flags, step_layer_heatmap
from .samples import bootstrap_interval
from .stability import pairwise


def _safe(name) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(name))


def heatmaps(cube: xr.Dataset, out: Path, metric: str = "importance") -> list[Path]:
    """Step x layer heatmaps per model and dataset."""
    paths = []
    for model in cube["model"].values:
        for dataset in cube["dataset"].values:
            da = cube[metric].sel(model=model, dataset=dataset).dropna("step", how="all").load()
            title = f"{model}: {metric} per layer and checkpoint, calibration set {dataset}"
            flags = step_flags(cube.sel(model=model, dataset=dataset).sel(step=da["step"]))
            fig = step_layer_heatmap(da, title=title, metric=metric, flags=flags)
            paths += save(fig, out / f"heatmap_{_safe(model)}_{_safe(dataset)}_{metric}")
    return paths


def model_figures(cube: xr.Dataset, model, out: Path, metric: str = "importance") -> list[Path]:
    """Per-layer lines, order grids, sample counts, dataset correlations, one-shot vs iterative."""
    m = final_step(cube, model).load()
    where = f"{model} step {int(m['step'])}"
    imp = m[metric].mean("sample")
    name, paths = _safe(model), []
    paths += save(plots.importance_per_layer(imp, modules=("block",), title=f"{where}: block {metric}",
                                             metric=metric), out / f"block_per_layer_{name}")
    paths += save(plots.importance_per_layer(imp, title=f"{where}: attention and MLP {metric}",
                                             metric=metric), out / f"attn_mlp_per_layer_{name}")
    for dataset in m["dataset"].values:
        tag = f"{where}, calibration set {dataset}"
        order = drop_order(imp.sel(dataset=dataset))
        paths += save(plots.order_grid(order, title=f"{tag}: one-shot dropping order"),
                      out / f"order_grid_{name}_{_safe(dataset)}")
        boot = bootstrap_interval(m[metric].sel(dataset=dataset, module=["attn", "mlp"]))
        paths += save(plots.sample_count(boot, title=f"{tag}: {metric} vs samples", metric=metric),
                      out / f"sample_count_{name}_{_safe(dataset)}")
    if m.sizes["dataset"] > 1:
        corr = pairwise(imp, across="dataset")
        paths += save(plots.corr_matrix(corr, title=f"{where}: agreement of calibration sets"),
                      out / f"dataset_corr_{name}")
    return paths


def order_figures(cube: xr.Dataset, model, out: Path) -> list[Path]:
    """One-shot vs iterative, for every (step, dataset) of `model` where orders are stored."""
    if "drop_order" not in cube:
        return []
    orders = cube["drop_order"].sel(model=model).load()
    has = (orders >= 0).any(["strategy", "module", "rank"])
    paths = []
    for step in orders["step"].values:
        for dataset in orders["dataset"].values:
            if has.sel(step=step, dataset=dataset):
                title = f"{model} step {step}, calibration set {dataset}: one-shot vs iterative"
                fig = plots.one_shot_vs_iterative(orders.sel(step=step, dataset=dataset), title=title)
                paths += save(fig, out / f"one_shot_vs_iterative_{_safe(model)}_{step}_{_safe(dataset)}")
    return paths


def draw_all(cube: xr.Dataset, out: Path, metric: str = "importance") -> list[Path]:
    """Every figure for every model of `cube`."""
    paths = heatmaps(cube, out, metric)
    for model in cube["model"].values:
        paths += model_figures(cube, model, out, metric) + order_figures(cube, model, out)
    return paths
