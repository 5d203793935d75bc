"""The study's reference procedure, re-implemented independently of `redundancy.scoring`.

This is how research scripts compute importance = 1 - cos(X, Y): batch size 1 (a loop over
samples), one forward pass of the full model per module type (block, then attention, then MLP),
forward hooks that copy the hooked inputs/outputs to the host with `.detach().cpu()` for every
sample, then on the host the fp32 cosine over the concatenation of all samples' tokens, averaged.

Only the family table (where a layer's attention, MLP and residual sites live) is shared with the
scorer; the hooks, the capture and the cosine are separate code, so agreement is a real check.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from redundancy.families import Family, family_for, get_path

MODULES = ("block", "attn", "mlp")
Tap = tuple[str, str]  # (submodule path relative to a layer, "" for the layer itself; "in" or "out")


def module_taps(family: Family) -> dict[str, tuple[Tap, Tap, bool]]:
    """module -> (X tap, Y tap, Y adds X). In parallel families the residual after attention
    (or after the MLP) is never materialised, so Y = X + the module's added output, on the host."""
    h, o = ("", "in"), ("", "out")
    if family.residual == "sequential":
        mid = (family.mid_site, "in")  # its input is h + a, the residual after attention
        return {"block": (h, o, False), "attn": (h, mid, False), "mlp": (mid, o, False)}
    return {"block": (h, o, False), "attn": (h, (family.attn_out, "out"), True),
            "mlp": (h, (family.mlp_out, "out"), True)}


def _to_host(x: Any) -> torch.Tensor:
    """A module's output (or its first element, for tuples) copied to the host, as research scripts do."""
    x = x[0] if isinstance(x, (tuple, list)) else x
    return x.detach().cpu()


def _register(layer: nn.Module, tap: Tap, store: list[torch.Tensor]) -> Any:
    """Hook one tap of one layer: every call appends a host copy of the tensor to `store`."""
    path, side = tap
    module = get_path(layer, path) if path else layer
    if side == "in":
        return module.register_forward_pre_hook(
            lambda _m, args, kwargs: store.append(_to_host(args[0] if args else kwargs["hidden_states"])),
            with_kwargs=True)
    return module.register_forward_hook(lambda _m, _args, out: store.append(_to_host(out)))


def _capture(model: nn.Module, input_ids: torch.Tensor,
             taps: tuple[Tap, Tap]) -> list[list[list[torch.Tensor]]]:
    """One pass over the samples, batch size 1: per layer, per tap, one host tensor per sample."""
    layers = get_path(model, family_for(model.config).layers)
    stores = [[[], []] for _ in layers]
    handles = [_register(layer, tap, stores[i][k])
               for i, layer in enumerate(layers) for k, tap in enumerate(taps)]
    try:
        with torch.no_grad():
            for i in range(input_ids.shape[0]):
                model(input_ids=input_ids[i:i + 1], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return stores


def _importance(xs: list[torch.Tensor], ys: list[torch.Tensor], y_adds_x: bool) -> float:
    """1 - mean cosine over all tokens of all samples, in fp32 on the host."""
    x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs]).float()
    y = torch.cat([t.reshape(-1, t.shape[-1]) for t in ys]).float()
    if y_adds_x:
        y = x + y
    return 1.0 - F.cosine_similarity(x, y, dim=-1).mean().item()


def reference_importance(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """input_ids (n, T) -> importance (layers, 3) for block, attn, mlp: three passes, host cosines."""
    taps = module_taps(family_for(model.config))
    cols = []
    for module in MODULES:
        x_tap, y_tap, adds = taps[module]
        stores = _capture(model, input_ids, (x_tap, y_tap))
        cols.append([_importance(xs, ys, adds) for xs, ys in stores])
    return torch.tensor(cols, dtype=torch.float64).T
