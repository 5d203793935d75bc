"""Choose checkpoints from a history: a token grid, explicit steps, or N spread evenly."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SeriesError
from ._checkpoint import Checkpoint


def select(ckpts: list[Checkpoint], every: float | None = None, steps: Sequence[int] | None = None,
           max_n: int | None = None) -> list[Checkpoint]:
    """The chosen checkpoints, sorted by step; the first and the last are always included.

    every: tokens between grid points; the checkpoint nearest each point 0, every, 2 every, ...
    steps: exact steps (an unknown step is an error naming the nearest ones).
    max_n: at most N, spread evenly over the (already chosen) list.
    """
    ckpts = sorted(ckpts, key=lambda c: c.step)
    if not ckpts:
        raise SeriesError("the series has no checkpoints to choose from")
    chosen = {ckpts[0].step, ckpts[-1].step}
    if steps:
        have = {c.step for c in ckpts}
        for s in steps:
            if s not in have:
                near = sorted(have, key=lambda h: abs(h - s))[:3]
                raise SeriesError(f"no checkpoint at step {s}; nearest: {sorted(near)}")
        chosen |= set(steps)
    if every is not None:
        chosen |= _grid(ckpts, every)
    if not steps and every is None:
        chosen = {c.step for c in ckpts}
    picked = [c for c in ckpts if c.step in chosen]
    if max_n is not None and len(picked) > max_n:
        idx = np.unique(np.round(np.linspace(0, len(picked) - 1, max(max_n, 2))).astype(int))
        picked = [picked[i] for i in idx]
    return picked


def _grid(ckpts: list[Checkpoint], every: float) -> set[int]:
    if any(c.tokens is None for c in ckpts):
        raise SeriesError("--every needs tokens per checkpoint; this preset has none: pass --tokens-per-step")
    tokens = np.array([c.tokens for c in ckpts], dtype=float)
    grid = np.arange(0.0, tokens.max() + every / 2, every)
    return {ckpts[int(np.abs(tokens - g).argmin())].step for g in grid}
