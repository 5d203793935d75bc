"""First-order estimate of what dropping each module costs, for every module from one forward and
one backward pass: `loss_delta_grad` = -(dL/dY) . f, summed over a sample's tokens, where f is what
the module adds to the residual stream Y and L the sample's mean next-token loss.

For attention and MLP, f is the output of the module that joins the residual (the family table's
attn_out / mlp_out) and dL/dY equals the gradient of L with respect to that output (Y = X + f; for
granite's Y = X + r a, -(dL/dY) . (r a) = -(dL/da) . a, the same formula). For a block, f = o - h:
the layer's output minus its input, against dL/do. Cheap enough for every checkpoint of a history;
tests check it against a finite difference, and benchmarks/ablation_cost.py against the exact value.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..families import Family, get_path
from ._hooks import _first, decoder_layers


def _capture(model: nn.Module, family: Family) -> tuple[dict[tuple[int, str], torch.Tensor], list[Any]]:
    """Hooks keeping each layer's a, m (as the model produced them), h and o."""
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []

    def keep(key, replace: bool):
        def hook(_m, args, kwargs, output=None):
            if output is None:  # a pre-hook: the layer's input h
                seen[key] = args[0] if args else kwargs["hidden_states"]
                return None
            seen[key] = _first(output)
            if replace:  # falcon adds into this tensor in place: hand the model a copy
                return (seen[key].clone(), *output[1:]) if isinstance(output, tuple) else seen[key].clone()
            return None
        return hook

    for i, layer in enumerate(decoder_layers(model, family)):
        handles.append(layer.register_forward_pre_hook(keep((i, "h"), False), with_kwargs=True))
        handles.append(layer.register_forward_hook(lambda m, a, k, o, i=i: keep((i, "o"), False)(m, a, k, o),
                                                   with_kwargs=True))
        for kind, path in (("a", family.attn_out), ("m", family.mlp_out)):
            handles.append(get_path(layer, path).register_forward_hook(
                lambda m, a, k, o, kind=kind, i=i: keep((i, kind), family.clone_out)(m, a, k, o),
                with_kwargs=True))
    return seen, handles


def first_order(model: nn.Module, family: Family, ids: torch.Tensor) -> torch.Tensor:
    """ids (B, T) -> (B, L, 3): loss_delta_grad of block, attn and mlp of every layer, fp32."""
    n = len(decoder_layers(model, family))
    seen, handles = _capture(model, family)
    try:
        with torch.inference_mode(False), torch.enable_grad():  # the scorer runs in inference mode
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=embeds, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            loss = nll.mean(-1)  # (B,): each sample's mean next-token loss
            keys = [(i, k) for i in range(n) for k in ("o", "a", "m")]
            grads = torch.autograd.grad(loss.sum(), [seen[k] for k in keys], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    g = dict(zip(keys, grads))
    out = torch.zeros(ids.shape[0], n, 3, device=ids.device)
    for i in range(n):
        for j, (kind, f) in enumerate((("o", seen[(i, "o")] - seen[(i, "h")]), ("a", seen[(i, "a")]),
                                       ("m", seen[(i, "m")]))):
            grad = g[(i, kind)]
            if grad is not None:
                out[:, i, j] = -(grad.float() * f.detach().float()).sum(dim=(1, 2))
    return out
