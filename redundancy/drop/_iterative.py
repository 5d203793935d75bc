"""Iterative dropping order: drop the least important module, re-score the dropped model, repeat."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..scoring import MODULES, Scorer
from ..scoring._masks import runtime_drop


def iterative_order(scorer: Scorer, tokens: torch.Tensor, module: str, batch_size: int,
                    metric: str = "importance",
                    on_step: Callable[[int, int], None] | None = None) -> list[int]:
    """Layers of `module` (block, attn or mlp) in iterative drop order, lowest importance first.

    Each round scores the model with the layers chosen so far dropped (runtime masks) and picks the
    lowest mean score among the layers of this module type still present. Only this module type's
    dropped layers leave the candidates: dropping layer 3's attention keeps layer 3's MLP scored.
    """
    j, k = MODULES.index(module), scorer.metric_names.index(metric)
    n_layers, chosen = scorer.n_layers, []
    for round_ in range(n_layers):
        masks = dict(attn=chosen if module in ("attn", "block") else (),
                     mlp=chosen if module in ("mlp", "block") else ())
        with runtime_drop(scorer.model, scorer.family, **masks):
            scores = scorer.score(tokens, batch_size)[:, :, j, k].mean(axis=0)  # (layer,)
        scores[chosen] = np.inf
        chosen.append(int(np.argmin(scores)))
        if on_step is not None:
            on_step(round_ + 1, n_layers)
    return chosen
