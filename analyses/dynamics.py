"""Training dynamics: how importances and drop sets settle across checkpoints."""
from __future__ import annotations

import xarray as xr

from .orders import drop_order, drop_sets
from .stability import rank_correlation


def without_flagged(scores: xr.DataArray, along: str = "step", keep_flagged: bool = False) -> xr.DataArray:
    """`scores` without the steps flagged identical_to_final (the `flagged` coordinate open_cube sets):
    dropped when the flag runs along `along` only, else masked to NaN. `keep_flagged` keeps them."""
    if keep_flagged or "flagged" not in scores.coords:
        return scores
    flag = scores["flagged"].astype(bool)
    if flag.dims == (along,):
        return scores.isel({along: ~flag.values})
    return scores.where(~flag)


def corr_with_step(scores: xr.DataArray, ref: str = "final", dim: str = "layer", along: str = "step",
                   method: str = "spearman", keep_flagged: bool = False) -> xr.DataArray:
    """Rank correlation of each step's importances with the final (or first) step's."""
    scores = without_flagged(scores, along, keep_flagged)
    reference = scores.isel({along: -1 if ref == "final" else 0}, drop=True)
    return rank_correlation(scores, reference, dim=dim, method=method)


def first_step_with_final_set(scores: xr.DataArray, k: int, dim: str = "layer",
                              along: str = "step", keep_flagged: bool = False) -> xr.DataArray:
    """First step from which every later step's k-drop set equals the final one."""
    scores = without_flagged(scores, along, keep_flagged)
    sets = drop_sets(drop_order(scores, dim), dim, scores[dim].values).sel(k=k)
    same = (sets == sets.isel({along: -1})).all(dim)
    stable = same.isel({along: slice(None, None, -1)}).cumprod(along).isel(
        {along: slice(None, None, -1)}).astype(bool)
    return scores[along].where(stable).min(along)


def trend(scores: xr.DataArray, dim: str = "layer", along: str = "step", skip_first: bool = True,
          keep_flagged: bool = False) -> xr.DataArray:
    """Mean importance over layers (layer 0 left out, as the study draws it apart) at each step."""
    scores = without_flagged(scores, along, keep_flagged)
    s = scores.sel({dim: scores[dim] > 0}) if skip_first else scores
    return s.mean(dim)


def study_observation(scores: xr.DataArray, module_dim: str = "module", along: str = "step",
                      keep_flagged: bool = False) -> xr.Dataset:
    """The study's claim on a series: attention importance stays low while block and MLP rise.

    Returns, per module, the mean importance (layers 1+) at the first and final step, the change,
    and whether attention's final importance is below MLP's and block's.
    """
    t = trend(scores, along=along, keep_flagged=keep_flagged)
    first = t.isel({along: 0}).reset_coords(drop=True)  # step-bound coords (tokens) would clash
    final = t.isel({along: -1}).reset_coords(drop=True)
    out = xr.Dataset({"first": first, "final": final, "change": final - first})
    attn = final.sel({module_dim: "attn"})
    out["attn_lowest_at_end"] = ((attn < final.sel({module_dim: "mlp"}))
                                 & (attn < final.sel({module_dim: "block"})))
    return out
