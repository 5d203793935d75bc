"""Hook sites on a decoder, named as in TransformerLens, owned by a context manager.

Per layer l the sites are (each a tensor of shape (batch, tokens, hidden)):
  blocks.{l}.hook_resid_pre    h, the residual entering the layer
  blocks.{l}.attn.hook_in      the attention module's input (norm(h); h for olmo2)
  blocks.{l}.hook_attn_out     a, what attention adds to the residual (granite: r times its output)
  blocks.{l}.hook_resid_mid    h + a (sequential families only)
  blocks.{l}.mlp.hook_in       the MLP module's input
  blocks.{l}.hook_mlp_out      m, what the MLP adds to the residual
  blocks.{l}.hook_resid_post   o, the residual leaving the layer
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..families import Family, get_path

LayerCallback = Callable[[int, dict[str, torch.Tensor]], None]


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def _input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def decoder_layers(model: nn.Module, family: Family) -> nn.ModuleList:
    return get_path(model, family.layers)


@contextmanager
def residual_hooks(model: nn.Module, family: Family, on_layer: LayerCallback) -> Iterator[None]:
    """Capture every site of every layer; call `on_layer(l, sites)` as layer l finishes.

    Tensors are references, not copies; they are released after the callback. Hooks are always
    removed, even when the forward pass raises.
    """
    handles: list[Any] = []
    scale = float(getattr(model.config, family.scale)) if family.scale else None
    for idx, layer in enumerate(decoder_layers(model, family)):
        handles += _hook_layer(idx, layer, family=family, on_layer=on_layer, scale=scale,
                               clone=family.clone_out)
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _hook_layer(idx: int, layer: nn.Module, family: Family, on_layer: LayerCallback,
                scale: float | None = None, clone: bool = False) -> list[Any]:
    """`scale`: the residual multiplier r of families whose sublayers join the residual as r * output;
    `clone`: copy outputs the layer later modifies in place (falcon adds attention into the MLP's)."""
    sites: dict[str, torch.Tensor] = {}

    def save_input(name: str):
        def hook(_m, args, kwargs):
            sites[name] = _input(args, kwargs)
        return hook

    def save_output(name: str):
        def hook(_m, _args, output):
            out = _first(output)
            sites[name] = out * scale if scale is not None else out.clone() if clone else out  # what joins
        return hook

    def finish(_m, args, kwargs, output):
        sites["hook_resid_pre"] = _input(args, kwargs)
        sites["hook_resid_post"] = _first(output)
        try:
            on_layer(idx, sites)
        finally:
            sites.clear()

    pre = dict(with_kwargs=True)
    handles = [
        get_path(layer, family.attn).register_forward_pre_hook(save_input("attn.hook_in"), **pre),
        get_path(layer, family.mlp).register_forward_pre_hook(save_input("mlp.hook_in"), **pre),
        get_path(layer, family.attn_out).register_forward_hook(save_output("hook_attn_out")),
        get_path(layer, family.mlp_out).register_forward_hook(save_output("hook_mlp_out")),
        layer.register_forward_hook(finish, with_kwargs=True),
    ]
    if family.mid_site is not None:
        handles.append(get_path(layer, family.mid_site).register_forward_pre_hook(
            save_input("hook_resid_mid"), **pre))
    return handles
