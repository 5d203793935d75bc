"""Runtime drop masks: a dropped module adds nothing to the residual, which passes unchanged."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..errors import DropError
from ..families import Family, get_path
from ._hooks import decoder_layers


def _zero_output(_module: nn.Module, _args: Any, output: Any) -> Any:
    if isinstance(output, tuple):  # attention returns (hidden, weights)
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


@contextmanager
def runtime_drop(model: nn.Module, family: Family, attn: Iterable[int] = (),
                 mlp: Iterable[int] = ()) -> Iterator[None]:
    """Within the block, layers in `attn` / `mlp` add zero to the residual (a block drop is both).

    The module whose output joins the residual (family.attn_out / mlp_out) has its output
    replaced by zeros, so X + 0 = X exactly, for every residual form in the table. Raises DropError
    for a layer index outside the model (before any hook is placed).
    """
    layers = decoder_layers(model, family)
    handles = []
    for path, idx in [(family.attn_out, sorted(set(attn))), (family.mlp_out, sorted(set(mlp)))]:
        for i in idx:
            if not 0 <= i < len(layers):
                raise DropError(f"layer {i} does not exist: the model has {len(layers)} layers "
                                f"(0..{len(layers) - 1})")
            handles.append(get_path(layers[i], path).register_forward_hook(_zero_output))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
