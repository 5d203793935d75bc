"""Multi-stage histories (OLMo-2/3 stage 1 then mid-training, SmolLM3's three stages, OpenCoder's
pretraining then annealing) as one ordered history.

Where each stage counts its steps from 0 (preset `stages: restart`), stage k's steps are placed after
stage k-1's last one (step = offset + stage_step, offset = previous stage's last step + 1) and its
tokens after the previous stage's last tokens: `step` stays unique and `tokens` monotone along the
sequence, so two stages' equal step numbers never share a cube cell. Where steps run on across
stages (`stages: continue`, SmolLM3) they are kept. `stage` and `stage_step` keep the names' values.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ..errors import SeriesError
from ._checkpoint import Checkpoint


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def stage_names(ckpts: list[Checkpoint], order: tuple[str, ...] = ()) -> list[str]:
    """The stages present, in training order: `order` first, then natural order (stage2 < stage10)."""
    present = {c.stage for c in ckpts}
    return [s for s in order if s in present] + sorted(present - set(order), key=_natural)


# OLMo-2/3's mid-training "ingredient" runs (stage2-ingredient1, -ingredient2, ...; the OLMo-2 and
# Olmo-3 model cards): separate runs that each start from the end of the stage before, then souped
_SIBLING = re.compile(r"^(?P<base>.+)-ingredient\d+$")


def sibling_base(stage: str) -> str | None:
    """The name shared by parallel runs of one stage ("stage2" for "stage2-ingredient3"), else None."""
    m = _SIBLING.match(stage)
    return m["base"] if m else None


def sequence(ckpts: list[Checkpoint], order: tuple[str, ...] = (), restart: bool = True) -> list[Checkpoint]:
    """The checkpoints sorted along the stage sequence, with global steps and cumulative tokens.
    Parallel runs of one stage (ingredients) each start where the stage before ended, so they share
    step numbers: `one_run` refuses such a set unless one of them is selected (--stage)."""
    if not any(c.stage for c in ckpts):
        return sorted(ckpts, key=lambda c: c.step)
    out: list[Checkpoint] = []
    step_offset, token_offset = 0, 0.0
    start: dict[str, tuple[int, float]] = {}  # sibling base -> offsets where its runs start
    after = (0, 0.0)  # the offsets after the latest sibling run
    for stage in stage_names(ckpts, order):
        base = sibling_base(stage)
        if base is not None:
            step_offset, token_offset = start.setdefault(base, (step_offset, token_offset))
        group = sorted((c for c in ckpts if c.stage == stage), key=lambda c: c.step)
        for c in group:
            tokens = None if c.tokens is None else c.tokens + (token_offset if restart else 0.0)
            global_step = c.step + (step_offset if restart else 0)
            out.append(replace(c, step=global_step, stage_step=c.step, tokens=tokens))
        ended = (out[-1].step + 1, out[-1].tokens if out[-1].tokens is not None else token_offset)
        after = max(after, ended) if base is not None else ended
        step_offset, token_offset = after if base is not None else ended
    steps = [c.step for c in out]
    siblings = any(sibling_base(c.stage) for c in out)
    if len(set(steps)) != len(steps) and not siblings:  # continuing steps that overlap: not one sequence
        raise SeriesError("these stages share step numbers although the preset says steps run on across "
                          "stages; select one stage sequence with --stage")
    return out


def one_run(ckpts: list[Checkpoint]) -> list[Checkpoint]:
    """`ckpts`, refused when they hold several parallel runs of one stage (their steps coincide).

    Raises:
        SeriesError: naming the runs and how to keep one (--stage).
    """
    runs: dict[str, list[str]] = {}
    for stage in dict.fromkeys(c.stage for c in ckpts if c.stage):
        if (base := sibling_base(stage)) is not None:
            runs.setdefault(base, []).append(stage)
    if clash := next((names for names in runs.values() if len(names) > 1), None):
        before = [s for s in dict.fromkeys(c.stage for c in ckpts if c.stage) if sibling_base(s) is None]
        keep = ",".join([*before[:1], clash[0]])
        raise SeriesError(f"stages {', '.join(clash)} are separate runs that each start from the same "
                          "checkpoint (ingredient runs), not one history; score one at a time, e.g. "
                          f"--stage {keep}")
    return ckpts


def select_stages(ckpts: list[Checkpoint], stages: list[str] | None) -> list[Checkpoint]:
    """Keep the named stages (all when None); an unknown name is an error listing the stages."""
    if not stages:
        return ckpts
    have = list(dict.fromkeys(c.stage for c in ckpts if c.stage))  # already in training order
    if unknown := [s for s in stages if s not in have]:
        raise SeriesError(f"no stage {unknown[0]!r} in this history; its stages: {', '.join(have) or 'none'}")
    return [c for c in ckpts if c.stage in stages]
