"""A series from a folder of Hugging Face checkpoints, one per step, from a Hugging Face cache
tree (`models--ORG--NAME/`, one snapshot per branch), or from a folder of Megatron-LM checkpoints
(`iter_N/`, either `--ckpt-format`), each converted once into the cache as the hub crawl does
(sources/_megatron.py; their step and tokens from their own args). Each folder's step: sources/_steps.py."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..errors import SeriesError
from ._checkpoint import Checkpoint, Series
from ._presets import Preset, make_preset
from ._stages import one_run, select_stages, sequence, stage_names
from ._steps import StepReading, UnreadableName, known_stage_order, read_step

_SHOWN = 6  # unreadable names listed in the one-line error


def local_series(path: str | Path, preset: str | None = None, pattern: str | None = None,
                 tokens_per_step: float | None = None, stages: Sequence[str] | None = None,
                 tokenizer: str | None = None) -> Series:
    """`local:DIR` as a Series: its model name is the folder's (ORG/NAME for a cache tree). `stages`:
    keep these training stages (--stage), needed where the folder holds parallel runs of one stage.
    `tokenizer` (repo or folder): for a folder of Megatron checkpoints, which carry none.
    Raises SeriesError (see local_checkpoints; sources._stages.one_run)."""
    root = Path(path).expanduser()
    ckpts = select_stages(local_checkpoints(root, preset, pattern, tokens_per_step, tokenizer),
                          list(stages or []))
    return Series(_model_name(root), one_run(ckpts))


def _model_name(root: Path) -> str:
    tree = _cache_tree(root)
    if tree is None:
        return root.resolve().name
    _, org, name = tree.name.split("--", 2)  # huggingface_hub's repo_folder_name: models--ORG--NAME
    return f"{org}/{name}"


def _cache_tree(root: Path) -> Path | None:
    """The `models--ORG--NAME` folder when root is one, its snapshots/ or one snapshot; else None."""
    for tree in (root, root.parent, root.parent.parent):
        if (tree.name.startswith("models--") and tree.name.count("--") >= 2
                and (tree / "refs").is_dir() and (tree / "snapshots").is_dir()):
            return tree
    return None


def _folders(root: Path) -> list[Path]:
    """root itself when it is a checkpoint, else its checkpoint subfolders (a cache tree's snapshots)."""
    if (root / "config.json").exists():
        return [root]
    tree = _cache_tree(root)
    base = tree / "snapshots" if tree is not None else root
    return sorted(p.parent for p in base.glob("*/config.json"))


def local_checkpoints(root: Path, preset: str | Preset | None = None, pattern: str | None = None,
                      tokens_per_step: float | None = None, tokenizer: str | None = None) -> list[Checkpoint]:
    """Checkpoints of `root` (itself a checkpoint, a folder of them, a Hugging Face cache tree, or
    Megatron `iter_N/` checkpoints: converted once with `tokenizer`, see megatron_folders), in training
    order. preset/pattern/tokens_per_step: how folder names read (sources/_steps.py).
    Raises SeriesError: no such folder, no checkpoint in it, names read by no rule (one line listing
    them), two checkpoints of one step; a Megatron folder without `tokenizer` or not convertible."""
    root = Path(root)
    if not root.exists():
        raise SeriesError(f"local series {str(root)!r} does not exist")
    if not root.is_dir():
        raise SeriesError(f"local series {str(root)!r} is a file; give a folder of checkpoints")
    folders = megatron_folders(root, tokenizer) or _folders(root)
    if not folders:
        raise SeriesError(f"{root} holds no checkpoint: no config.json in it or in its subfolders "
                          "(expected one Hugging Face checkpoint per step, e.g. step-1000/config.json)")
    p = None if preset is None and pattern is None else (
        preset if isinstance(preset, Preset) else make_preset(preset, pattern, tokens_per_step))
    readings = _read_all(root, folders, p, tokens_per_step)
    ckpts = [Checkpoint(step=r.step, tokens=r.tokens, path=f, revision=r.revision, commit=r.commit,
                        stage=r.stage) for f, r in zip(folders, readings)]
    return _in_order(root, ckpts, p)


def megatron_folders(root: Path, tokenizer: str | None) -> list[Path]:
    """`root` (one Megatron `iter_N/` checkpoint) or its Megatron subfolders, each converted once to a
    Hugging Face folder with checkpoint.json (step, tokens) under the cache's converted/local/; none
    when root holds no Megatron checkpoint. The cache key is the folder's resolved path and its files'
    sizes and modification times, so a folder written anew is converted anew.
    Raises SeriesError (sources._megatron.convert_cached: no tokenizer, an unconvertible checkpoint)."""
    from ._megatron import is_megatron_checkpoint

    if is_megatron_checkpoint(root):
        found = [root]
    else:
        found = sorted(p for p in root.iterdir() if p.is_dir() and is_megatron_checkpoint(p))
    if not found:
        return []
    from .._cache import cache_root
    from ._megatron import convert_cached

    out = []
    for folder in found:
        stats = sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in folder.rglob("*") if f.is_file())
        key = hashlib.sha256(repr((str(folder.resolve()), stats)).encode()).hexdigest()[:16]
        target = cache_root() / "converted" / "local" / key / folder.name
        out.append(convert_cached(folder, tokenizer, target))
    return out


def _read_all(root: Path, folders: list[Path], p: Preset | None,
              tokens_per_step: float | None) -> list[StepReading]:
    """Every folder's reading; the names no rule reads are refused together, in one line."""
    readings, unread = [], []
    for folder in folders:
        try:
            readings.append(read_step(folder, preset=p, tokens_per_step=tokens_per_step))
        except UnreadableName as exc:
            unread.append(exc)
    if len(unread) == 1:
        raise unread[0]
    if unread:
        raise SeriesError(f"cannot tell the training step of {len(unread)} checkpoints in {root}: "
                          f"{_listed(unread)}; {unread[0].fix}")
    return readings


def _listed(unread: list[UnreadableName]) -> str:
    """`a, b (why); c (other why)`: names grouped by reason, the first few only (one line)."""
    shown, groups = unread[:_SHOWN], {}
    for e in shown:
        groups.setdefault(e.why, []).append(e.name)
    more = f"; and {len(unread) - _SHOWN} more" if len(unread) > _SHOWN else ""
    return "; ".join(f"{', '.join(names)} ({why})" for why, names in groups.items()) + more


def _refuse_duplicates(root: Path, ckpts: list[Checkpoint]) -> None:
    keys = [(c.stage, c.step) for c in ckpts]
    if len(set(keys)) != len(keys):
        dup = sorted({s for st, s in keys if keys.count((st, s)) > 1})
        raise SeriesError(f"{root} has several checkpoints for step(s) {dup}; keep one per step")


def _in_order(root: Path, ckpts: list[Checkpoint], p: Preset | None) -> list[Checkpoint]:
    """Sorted by step; multi-stage histories along their stages (sources/_stages.py), with the preset's
    stage rules when given. Without one: stages in the presets' known order then natural order;
    a stage whose first step does not pass the previous stage's last restarts from 0 (OLMo-2's
    ingredient soups, OpenCoder's annealing), else steps run on (SmolLM3)."""
    if not any(c.stage for c in ckpts):
        _refuse_duplicates(root, ckpts)
        return sorted(ckpts, key=lambda c: c.step)
    order = p.stage_order if p is not None else known_stage_order()
    if any(not c.stage for c in ckpts):  # OLMo-2's stage-1 branches, some without the prefix
        first = stage_names([c for c in ckpts if c.stage], order)[0]
        ckpts = [c if c.stage else replace(c, stage=first) for c in ckpts]
    _refuse_duplicates(root, ckpts)
    restart = p.stages == "restart" if p is not None else _restarts(ckpts, order)
    return sequence(ckpts, order, restart)


def _restarts(ckpts: list[Checkpoint], order: tuple[str, ...]) -> bool:
    """True when some stage's first step is not after the previous stage's last step."""
    spans = [[c.step for c in ckpts if c.stage == s] for s in stage_names(ckpts, order)]
    return any(min(b) <= max(a) for a, b in zip(spans, spans[1:]))
