"""A series from a folder of Hugging Face checkpoints, one per step."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import SeriesError
from ._checkpoint import Checkpoint, local_digest


def _step_of(folder: Path) -> tuple[int, float | None]:
    """(step, tokens) from checkpoint.json or trainer_state.json, else the last number in the name."""
    meta = folder / "checkpoint.json"
    if meta.exists():
        d = json.loads(meta.read_text())
        return int(d["step"]), d.get("tokens")
    state = folder / "trainer_state.json"
    if state.exists():
        return int(json.loads(state.read_text())["global_step"]), None
    numbers = re.findall(r"\d+", folder.name)
    if not numbers:
        raise SeriesError(f"cannot tell the training step of {folder}: add checkpoint.json "
                          '({"step": N, "tokens": T}) or put the step number in the folder name')
    return int(numbers[-1]), None


def local_checkpoints(root: Path) -> list[Checkpoint]:
    """Checkpoints of `root` (itself a checkpoint, or a folder of them), sorted by step."""
    if not root.exists():
        raise SeriesError(f"local series {str(root)!r} does not exist")
    if not root.is_dir():
        raise SeriesError(f"local series {str(root)!r} is a file; give a folder of checkpoints")
    folders = [root] if (root / "config.json").exists() else sorted(
        p.parent for p in root.glob("*/config.json"))
    if not folders:
        raise SeriesError(f"{root} holds no checkpoint: no config.json in it or in its subfolders "
                          "(expected one Hugging Face checkpoint per step, e.g. step-1000/config.json)")
    ckpts = []
    for folder in folders:
        step, tokens = _step_of(folder)
        ckpts.append(Checkpoint(step=step, tokens=tokens, path=folder, revision=folder.name,
                                source=local_digest(folder)))
    steps = [c.step for c in ckpts]
    if len(set(steps)) != len(steps):
        dup = sorted({s for s in steps if steps.count(s) > 1})
        raise SeriesError(f"{root} has several checkpoints for step(s) {dup}; keep one per step")
    return sorted(ckpts, key=lambda c: c.step)
