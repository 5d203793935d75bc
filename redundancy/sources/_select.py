"""Choose checkpoints from a history: a token grid, explicit steps, or N spread evenly."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import SeriesError
from ._checkpoint import Checkpoint


def select(ckpts: list[Checkpoint], *, every: float | None = None, steps: Sequence[int] | None = None,
           max_n: int | None = None) -> list[Checkpoint]:
    """The chosen checkpoints, sorted by step; the first and the last are always included.

    every: tokens between grid points (> 0); the checkpoint nearest each point 0, every, 2 every, ...
    steps: exact steps (an unknown step is an error naming the nearest ones).
    max_n: at most N (>= 2), spread evenly over the (already chosen) list.
    Raises SeriesError: no checkpoints, an unknown step, every <= 0, max_n < 2, no tokens for --every.
    """
    check_max_n(max_n)
    if every is not None:
        _check_spacing(every, every)
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
        idx = np.unique(np.round(np.linspace(0, len(picked) - 1, max_n)).astype(int))
        picked = [picked[i] for i in idx]
    return picked


def check_max_n(max_n: int | None) -> int | None:
    """None, or a count of at least 2 (the first and the last checkpoint are always kept).
    Raises SeriesError naming the value."""
    if max_n is not None and (isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 2):
        raise SeriesError(f"--max {max_n!r}: must be at least 2 (the first and the last checkpoint are "
                          "always kept; pick single steps with --step)")
    return max_n


def grid_spacing(text: str) -> float:
    """--every as tokens ('500B' -> 5e11), refused unless above 0. Raises SeriesError."""
    from ._presets import parse_tokens

    return _check_spacing(parse_tokens(text), text)


def _check_spacing(every: float, written: object) -> float:
    if not (math.isfinite(every) and every > 0):
        raise SeriesError(f"--every {written!r}: the token grid needs a spacing above 0, e.g. 500B")
    return float(every)


def _grid(ckpts: list[Checkpoint], every: float) -> set[int]:
    """The steps of the checkpoints nearest a grid point 0, every, 2 every, ... up to the last tokens.

    The grid is never built (a spacing of 1 token over trillions would be trillions of points): the
    checkpoints are sorted by tokens, each owns the tokens closer to it than to its neighbours (ties
    to the earlier one, the lower step on equal tokens), and it is chosen when a grid point falls in
    that range. O(n log n) in the number of checkpoints, whatever the spacing.
    """
    if any(c.tokens is None for c in ckpts):
        raise SeriesError("--every needs tokens per checkpoint; this preset has none: pass --tokens-per-step")
    tokens = np.array([c.tokens for c in ckpts], dtype=float)  # ckpts sorted by step
    order = np.argsort(tokens, kind="stable")
    values, first = np.unique(tokens[order], return_index=True)  # equal tokens: the lowest step owns them
    mid = (values[1:] + values[:-1]) / 2
    last = math.ceil(values[-1] / every + 0.5) - 1  # np.arange(0, max + every / 2, every)'s last index
    low = np.concatenate([[-np.inf], mid])  # a checkpoint owns (low, high]; the first one [-inf, high]
    high = np.concatenate([mid, [np.inf]])
    k_low = np.maximum(np.floor(low / every) + 1, 0)
    k_low[0] = 0
    k_high = np.minimum(np.floor(high / every), last)
    owners = order[first[k_low <= k_high]]
    return {ckpts[int(i)].step for i in owners}
