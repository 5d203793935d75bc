"""Metrics: functions of per-token statistics of one module's X, Y and f (its output added back).

All statistics are fp32 tensors of shape (batch, tokens, ...). A metric maps them elementwise to a
per-token value of the same shape; the scorer averages over tokens, giving one value per sample.
Higher means more important for every metric, so "drop the lowest" is always the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .._registry import Registry
from ..families import MODULES  # noqa: F401 - re-exported: the cube's module axis (block, attn, mlp)

EPS = 1e-8  # as torch.cosine_similarity: a zero vector gives cos 0, not NaN


@dataclass
class TokenStats:
    """Per-token dot products and squared norms, each (batch, tokens, ...) in fp32."""

    xy: torch.Tensor  # <X, Y>, X the residual entering, Y the residual leaving
    xx: torch.Tensor
    yy: torch.Tensor
    ff: torch.Tensor  # |f|^2, f the module's output added back (Y - X)
    uf: torch.Tensor  # <u, f>, u the module's own input (its norm's output)
    uu: torch.Tensor

    def cos(self) -> torch.Tensor:
        return self.xy / torch.sqrt(self.xx * self.yy).clamp_min(EPS)


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    per_token: Callable[[TokenStats], torch.Tensor] | None  # None: an exact-ablation metric (_ablation.py)


METRICS: Registry[Metric] = Registry("metric")


def _register(name: str, description: str):
    def deco(fn: Callable[[TokenStats], torch.Tensor]) -> Callable[[TokenStats], torch.Tensor]:
        METRICS.register(name, Metric(name, description, fn))
        return fn
    return deco


@_register("importance", "1 - cos(X, Y), X entering and Y leaving the residual (the study's metric)")
def _importance(s: TokenStats) -> torch.Tensor:
    return 1.0 - s.cos()


@_register("importance_no_residual", "1 - cos(u, f): the module's input vs its raw output")
def _importance_no_residual(s: TokenStats) -> torch.Tensor:
    return 1.0 - s.uf / torch.sqrt(s.uu * s.ff).clamp_min(EPS)


@_register("angular_distance", "arccos(cos(X, Y)) / pi")
def _angular(s: TokenStats) -> torch.Tensor:
    return torch.arccos(s.cos().clamp(-1.0, 1.0)) / torch.pi


@_register("relative_magnitude", "|f| / |X + f|")
def _relative_magnitude(s: TokenStats) -> torch.Tensor:
    return torch.sqrt(s.ff / s.yy.clamp_min(EPS * EPS))


DEFAULT_METRICS: tuple[str, ...] = tuple(METRICS.names())  # the cheap set: one forward pass
# exact ablation (scoring/_ablation.py): the module dropped, the rest of the model re-run per module
METRICS.register("loss_delta", Metric("loss_delta", "increase of the mean next-token loss when the module "
                                      "is dropped (exact ablation)", None))
METRICS.register("kl", Metric("kl", "mean KL divergence of the next-token distribution from the full "
                              "model's when the module is dropped (exact ablation)", None))
# first-order estimate (scoring/_first_order.py): one forward and one backward for every module
METRICS.register("loss_delta_grad", Metric("loss_delta_grad", "first-order estimate of loss_delta: "
                                           "-(dL/dY) . f, from one backward pass", None))
