"""Whole runs from user input, what `redundancy score`, `crawl` and `order` call: the histories a
spec names, opened and selected once, scored into a cube by a registered executor, or ordered."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from .._registry import Registry
from ..cube import CubeStore
from ..settings import HubAccess, ScoreSettings, Selection
from ..sources import Series
from .settings import Events, Fetcher

__all__ = ["EXECUTORS", "open_histories", "score_history", "order_history"]

# executor name -> (series, store, settings, events, *, fetcher, workers) -> Events
Executor = Callable[..., Events]
EXECUTORS: Registry[Executor] = Registry("executor")


def _local(series: Series, store: CubeStore, settings: ScoreSettings, events: Events, *,
           fetcher: Fetcher | None, workers: int | None) -> Events:
    """This process, one checkpoint after the other (the next one fetched meanwhile)."""
    from .score import score_series
    return score_series(series, store, settings, events=events, fetcher=fetcher)


def _ray(series: Series, store: CubeStore, settings: ScoreSettings, events: Events, *,
         fetcher: Fetcher | None, workers: int | None) -> Events:
    """A Ray task per checkpoint, `workers` at once (default: as many as the cluster fits)."""
    from .ray_executor import score_series_ray
    return score_series_ray(series, store.path, settings, events=events, fetcher=fetcher,
                            num_workers=workers)


EXECUTORS.register("local", _local)
EXECUTORS.register("ray", _ray)


def open_histories(spec: str, *, selection: Selection | None = None, events: Events | None = None,
                   access: HubAccess | None = None) -> list[Series]:
    """The series `spec` names: builtin:NAME, local:DIR, hub:ORG/NAME (listed and selected, nothing
    downloaded), or every run of suite:NAME. `events.opening` hears progress while a series is
    being made ready (training builtin:tiny, listing a hub history).

    Raises SeriesError (an unreadable spec or history, options that do not apply to its kind),
    NotFoundError (an unknown kind, preset or suite, with the closest name)."""
    from ..sources import open_all

    ev, access = events or Events(), access or HubAccess()
    return open_all(spec, progress=ev.opening, **(selection or Selection()).series_args(),
                    token=access.token, endpoint=access.endpoint, tokenizer=access.tokenizer)


def score_history(spec: str | Sequence[Series], *, out: str | Path, settings: ScoreSettings | None = None,
                  selection: Selection | None = None, access: HubAccess | None = None,
                  executor: str = "local", workers: int | None = None,
                  events: Events | None = None) -> Events:
    """Score every checkpoint of every series `spec` names (or of the given Series) on every
    calibration set into the cube at `out` (a folder or s3://...); finished cells are skipped, so a
    killed run resumes. The store is checked before anything is opened or downloaded; a hub
    history is listed and selected first (`events.selected` hears each selection), then fetched
    checkpoint by checkpoint, each while the previous one is scored (`access`: token, cache, keep).
    Returns `events`, whose `written` lists the (step, dataset) cells written.

    Raises NotFoundError (an unknown executor), StoreError (a bad store, other calibration settings
    or sources), and what open_histories and the executor raise."""
    settings = settings or ScoreSettings()
    run = EXECUTORS.get(executor)
    ev = events or Events()
    store = CubeStore.open(out, settings.calibration())  # refuse a bad out before any work (or network)
    fetcher = None
    if isinstance(spec, str):
        from ..sources import is_hub

        serieses = open_histories(spec, selection=selection, events=ev, access=access)
        if is_hub(spec):
            fetcher = (access or HubAccess()).fetcher()
            for series in serieses:
                ev.selected(series)
    else:
        serieses = list(spec)
    for series in serieses:
        ev.series(series)
        run(series, store, settings, ev, fetcher=fetcher, workers=workers)
    return ev


def order_history(spec: str, *, out: str | Path, settings: ScoreSettings | None = None,
                  steps: Sequence[int] = (), modules: Sequence[str] = ("block", "attn", "mlp"),
                  metric: str = "importance", selection: Selection | None = None,
                  access: HubAccess | None = None, events: Events | None = None) -> list[tuple[int, str]]:
    """One-shot and iterative dropping orders of the chosen steps (default: the last) of the series
    `spec` names, stored in the cube at `out` beside the scores (variable drop_order). The windows
    are the cube's own (its n_samples, seq_len and seed replace those of `settings`); `settings`
    gives the calibration sets, batch size, device and dtype. A hub history is fetched as
    score_history fetches it. Returns the (step, dataset) order cells written.

    Raises StoreError (no cube at `out`), SeriesError (a step the series has not), NotFoundError (an
    unknown module or metric), and what score_series raises."""
    from ..sources import is_hub
    from .orders import order_series

    stored = CubeStore.open(out).settings()
    settings = replace(settings or ScoreSettings(), n_samples=stored["n_samples"], seq_len=stored["seq_len"],
                       seed=stored["seed"])
    store = CubeStore.open(out, settings.calibration())
    ev = events or Events()
    fetcher = (access or HubAccess()).fetcher() if is_hub(spec) else None
    written: list[tuple[int, str]] = []
    for series in open_histories(spec, selection=selection, events=ev, access=access):
        written += order_series(series, store, settings, steps=steps, modules=modules, metric=metric,
                                events=ev, fetcher=fetcher)
    return written


