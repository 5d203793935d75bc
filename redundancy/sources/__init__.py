"""Checkpoint series: `builtin:tiny` (trained here) and `local:DIR` (a folder per step)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .._registry import Registry
from ..errors import SeriesError
from ._checkpoint import Checkpoint, Series
from ._local import local_checkpoints
from ._presets import PRESETS, make_preset
from ._tiny import build_tiny_series

__all__ = ["Checkpoint", "Series", "open_series", "list_checkpoints", "SERIES_KINDS", "BUILTIN_SERIES",
           "PRESETS"]

Progress = Callable[[str, int, int], None]


def _builtin(name: str, progress: Progress | None) -> Series:
    folder = BUILTIN_SERIES.get(name)(progress)
    return Series(f"builtin:{name}", local_checkpoints(folder))


def _local(path: str, progress: Progress | None) -> Series:
    root = Path(path).expanduser()
    return Series(root.resolve().name, local_checkpoints(root))


BUILTIN_SERIES: Registry[Callable[[Progress | None], Path]] = Registry("built-in series")
BUILTIN_SERIES.register("tiny", lambda progress: build_tiny_series(progress=progress))

SERIES_KINDS: Registry[Callable[[str, Progress | None], Series]] = Registry("series kind")
SERIES_KINDS.register("builtin", _builtin)
SERIES_KINDS.register("local", _local)


def open_series(spec: str, progress: Progress | None = None) -> Series:
    """`builtin:tiny` or `local:DIR` -> its checkpoints (training the built-in one on first use)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise SeriesError(f"series {spec!r} should read KIND:NAME, e.g. builtin:tiny or local:./ckpts "
                          f"(kinds: {', '.join(SERIES_KINDS.names())})")
    return SERIES_KINDS.get(kind)(rest, progress)


def list_checkpoints(repo: str, preset: str | None = None, *, pattern: str | None = None,
                     tokens_per_step: float | None = None, token: str | None = None,
                     endpoint: str | None = None) -> list[Checkpoint]:
    """Every checkpoint of a hub repo (step, tokens, revision, commit, weight sha256s,
    duplicate_of), from the hub's listings only: nothing is downloaded.

    preset: pythia, olmo, olmo2, amber, smollm2 or map-neo; or a `pattern` with (?P<step>...).
    """
    from ._hub import list_checkpoints as _list

    return _list(repo, make_preset(preset, pattern, tokens_per_step), token=token, endpoint=endpoint)
