"""Dropping orders from scores: which layers go first, for one module type or jointly.

An order is an integer DataArray over a new `rank` dim: the layer dropped at each rank, lowest
score first (one-shot dropping, Men et al. 2024, "ShortGPT"; He et al. 2024, "What matters in
transformers?"). Positions past a model's depth (NaN scores) hold -1. Pure xarray/numpy: the
library (study, pipeline) and `analyses/` both read orders from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from .errors import StoreError

__all__ = ["order_kernel", "drop_order", "joint_order", "final_step", "order_from_cube", "ONE_SHOT",
           "ITERATIVE"]

ONE_SHOT, ITERATIVE = "one-shot", "iterative"
Order = Sequence  # layers (attn, mlp, block) or (module, layer) pairs (joint), most redundant first


def order_kernel(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """scores (..., n) -> labels sorted by ascending score along the last axis; NaN last as -1.
    Raises nothing on purpose."""
    idx = np.argsort(np.where(np.isnan(scores), np.inf, scores), axis=-1, kind="stable")
    out = labels[idx]
    return np.where(np.take_along_axis(np.isnan(scores), idx, axis=-1), -1, out)


def drop_order(scores: xr.DataArray | xr.Dataset, dim: str = "layer", metric: str = "importance",
               sample_dim: str = "sample") -> xr.DataArray:
    """Labels of `dim` in the order they are dropped (lowest score first), over a new dim `rank`.

    `scores` is a DataArray, or a Dataset (the cube) from which `metric` is taken, averaged over
    `sample_dim`: `drop_order(cube, metric="loss_delta")` orders by measured loss.
    Raises NotFoundError (a Dataset without `metric`, with the closest variable)."""
    if isinstance(scores, xr.Dataset):
        from ._registry import check_name
        check_name("metric of the cube", metric, [str(v) for v in scores.data_vars])
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
    Raises nothing on purpose (`modules` missing from `scores` is xarray's KeyError).
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


def final_step(cube: xr.Dataset, model) -> xr.Dataset:
    """The model's last step that holds scores, with layers past its depth removed.
    Raises StoreError (no step of `model` holds scores)."""
    m = cube.sel(model=model)
    has = m["importance"].notnull().any([d for d in m["importance"].dims if d != "step"])
    if not bool(has.any()):
        raise StoreError(f"{model} has no scored step in the cube; score it first")
    m = m.sel(step=m["step"][has.values][-1])
    return m.sel(layer=m["importance"].notnull().any([d for d in m["importance"].dims if d != "layer"]))


def order_from_cube(cube: "xr.Dataset | str | Path", *, dataset: str, kind: str, strategy: str = ONE_SHOT,
                    metric: str = "importance") -> list:
    """The drop order of the cube's last scored step (one model), on calibration set `dataset`:
    layer indices, most redundant first, for kind attn, mlp or block; (module, layer) pairs for joint
    (attention and MLP ranked in one list). One-shot orders rank the mean of `metric` over samples;
    iterative ones are those `redundancy order` stored (variable drop_order).

    `cube`: an open cube (open_cube) or its location. Raises StoreError (several models, no such
    metric, no stored iterative orders), NotFoundError (an unknown dataset, kind or strategy, with
    the closest name).
    """
    from ._registry import check_name
    from .drop import PLAN_KINDS

    where = "the cube" if isinstance(cube, xr.Dataset) else str(cube)
    if not isinstance(cube, xr.Dataset):
        from .cube import open_cube
        cube = open_cube(cube)
    PLAN_KINDS.get(kind)  # "did you mean" on a typo
    check_name("order strategy", strategy, (ONE_SHOT, ITERATIVE))
    if cube.sizes["model"] != 1:
        raise StoreError(f"{where} holds several models; score the one you drop into its own store")
    check_name("calibration set of the cube", dataset, [str(d) for d in cube["dataset"].values])
    m = final_step(cube, cube["model"].values[0]).sel(dataset=dataset)
    if metric not in m:
        raise StoreError(f"{where} holds no {metric}; score it with --metric {metric}")
    if kind == "joint":
        j = joint_order(m[metric].mean("sample"))
        return [(str(a), int(b)) for a, b in zip(j["module"].values, j["layer"].values) if b >= 0]
    if strategy == ITERATIVE:
        if "drop_order" not in m:
            raise StoreError(f"{where} holds no iterative orders: run `redundancy order` first")
        order = m["drop_order"].sel(strategy=ITERATIVE, module=kind).values
    else:
        order = drop_order(m.sel(module=kind), metric=metric).values
    return [int(x) for x in order if x >= 0]


