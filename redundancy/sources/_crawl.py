"""A hub history as a series: listed, its stages and steps selected, nothing downloaded."""
from __future__ import annotations

from typing import Sequence

from ._checkpoint import Series
from ._hub import list_checkpoints
from ._presets import Preset, make_preset, parse_tokens
from ._select import select
from ._stages import one_run, select_stages


def hub_series(repo: str, *, preset: str | None = None, pattern: str | None = None,
               tokens_per_step: float | None = None, every: str | None = None,
               steps: Sequence[int] | None = None, max_n: int | None = None,
               token: str | None = None, endpoint: str | None = None,
               stages: Sequence[str] | None = None) -> Series:
    """The selected checkpoints of a hub history (nothing downloaded). `repo` is a repo id; for a
    preset with one repo per step, an author (listed on the hub) or a comma-separated list of repos."""
    p = make_preset(preset, pattern, tokens_per_step)
    listed = list_checkpoints(repo, p, token=token, endpoint=endpoint)
    ckpts = one_run(select_stages(listed, list(stages or [])))
    chosen = select(ckpts, every=parse_tokens(every) if every else None, steps=steps, max_n=max_n)
    return Series(series_name(repo, p), chosen)


def series_name(repo: str, preset: Preset) -> str:
    """The model name in the cube: the repo, or for one repo per step "<author>/<preset>"."""
    if preset.exposed != "repos":
        return repo
    return f"{repo.split(',')[0].split('/')[0]}/{preset.name}"
