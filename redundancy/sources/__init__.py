"""Checkpoint series: `builtin:tiny` (trained here), `local:DIR` (a folder per step), `hub:ORG/NAME`
(a hub history, listed and selected; files fetched when scored) and `suite:NAME` (several runs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .._registry import Registry
from ..errors import SeriesError
from ._checkpoint import Checkpoint, Series
from ._local import local_checkpoints, local_series
from ._presets import PRESETS, make_preset
from ._steps import StepReading, read_step
from ._tiny import build_tiny_series

__all__ = ["Checkpoint", "Series", "open_series", "open_all", "list_checkpoints", "SERIES_KINDS",
           "BUILTIN_SERIES", "PRESETS", "is_hub", "read_step", "StepReading"]

Progress = Callable[[str, int, int], None]


def _builtin(name: str, progress: Progress | None) -> Series:
    folder = BUILTIN_SERIES.get(name)(progress)
    return Series(f"builtin:{name}", local_checkpoints(folder))


def _local(path: str, progress: Progress | None, **naming: Any) -> Series:
    return local_series(path, **naming)


def _hub(repo: str, progress: Progress | None, **hub_args: Any) -> Series:
    from ._crawl import hub_series
    return hub_series(repo, **hub_args)


BUILTIN_SERIES: Registry[Callable[[Progress | None], Path]] = Registry("built-in series")
BUILTIN_SERIES.register("tiny", lambda progress: build_tiny_series(progress=progress))

SERIES_KINDS: Registry[Callable[..., Series]] = Registry("series kind")
SERIES_KINDS.register("builtin", _builtin)
SERIES_KINDS.register("local", _local)
SERIES_KINDS.register("hub", _hub)


def _split(spec: str) -> tuple[str, str]:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        kinds = ", ".join([*SERIES_KINDS.names(), "suite"])
        raise SeriesError(f"series {spec!r} should read KIND:NAME, e.g. builtin:tiny, local:./ckpts or "
                          f"hub:EleutherAI/pythia-160m (kinds: {kinds})")
    return kind, rest


# how names read: local folders take these too (sources/_steps.py); the other hub_args select
NAMING = ("preset", "pattern", "tokens_per_step", "stages")  # what local: takes too


def open_series(spec: str, *, progress: Progress | None = None, **hub_args: Any) -> Series:
    """`builtin:tiny`, `local:DIR` or `hub:ORG/NAME` -> its checkpoints (training the built-in one on
    first use; a hub history is listed and selected by `hub_args`: preset, every, steps, max_n...,
    see sources._crawl.hub_series; nothing is downloaded; a local folder takes preset, pattern and
    tokens_per_step, how its folder names read: sources._steps.read_step). `progress(what, done, total)`
    hears the built-in series' training.

    Raises SeriesError (a spec that is not KIND:NAME, hub selections given for a series that is not on
    the hub, a folder or hub history that cannot be read as checkpoints, a name whose step cannot be
    read); NotFoundError (an unknown kind, built-in series or preset, with the closest name)."""
    kind, rest = _split(spec)
    # token and endpoint also come from the environment (HF_TOKEN, HF_ENDPOINT): only selections count
    tokenizer = hub_args.pop("tokenizer", None)  # for local Megatron folders (the hub's is the fetcher's)
    given = {k: v for k, v in hub_args.items() if v not in (None, [], ()) and k not in ("token", "endpoint")}
    naming = {k: v for k, v in given.items() if k in NAMING} if kind == "local" else {}
    if kind != "hub" and set(given) - set(naming):
        raise SeriesError(f"{', '.join(sorted(set(given) - set(naming)))} select checkpoints of hub "
                          f"histories; {spec!r} is not one (write hub:ORG/NAME)")
    opener = SERIES_KINDS.get(kind)
    if kind == "local" and tokenizer is not None:
        naming["tokenizer"] = tokenizer
    return opener(rest, progress, **(hub_args if kind == "hub" else naming))


def open_all(spec: str, *, progress: Progress | None = None, **hub_args: Any) -> list[Series]:
    """The series a spec names: one, or every run of `suite:NAME` (built in: trained here; on the hub:
    listed with the suite's preset; or `suite:ORG/A,ORG/B` with `preset=`).
    Raises what open_series raises; NotFoundError (an unknown suite, with the closest name)."""
    kind, rest = _split(spec)
    if kind != "suite":
        return [open_series(spec, progress=progress, **hub_args)]
    from ._suites import builtin_suite, hub_suite, suite_from

    hub_args.pop("tokenizer", None)
    suite = suite_from(rest, hub_args.pop("preset", None))
    return builtin_suite(suite, progress=progress) if suite.builtin else hub_suite(suite, **hub_args)


def is_hub(spec: str) -> bool:
    """True when the spec names checkpoints that must be fetched from the hub before scoring.
    Raises NotFoundError for `suite:NAME` with an unknown NAME (with the closest one)."""
    kind, _, rest = spec.partition(":")
    if kind == "suite":
        from ._suites import SUITES
        return "/" in rest or not SUITES.get(rest).builtin
    return kind == "hub"


def list_checkpoints(repo: str, *, preset: str | None = None, pattern: str | None = None,
                     tokens_per_step: float | None = None, token: str | None = None,
                     endpoint: str | None = None) -> list[Checkpoint]:
    """Every checkpoint of a hub repo (step, tokens, revision, commit, weight sha256s,
    duplicate_of), from the hub's listings only: nothing is downloaded.

    preset: pythia, olmo, olmo2, amber, smollm2 or map-neo; or a `pattern` with (?P<step>...).
    Raises NotFoundError (an unknown preset, with the closest one); SeriesError (the hub cannot be
    reached or refuses the repo, no checkpoint found, names the preset cannot read).
    """
    from ._hub import list_checkpoints as _list

    return _list(repo, make_preset(preset, pattern, tokens_per_step), token=token, endpoint=endpoint)
