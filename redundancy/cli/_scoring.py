"""The scoring commands' work with progress bars: open the series and the store, report what a hub
selection holds, score (locally or as Ray tasks), order."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import Progress

from ..cube import CubeStore
from ..errors import RedundancyError
from ..pipeline import Events, ScoreSettings, score_series
from ._console import bars, console


def score_command(spec: str | list, out: Path, settings: ScoreSettings,
                  hub_args: dict[str, Any] | None = None,
                  fetch_args: dict[str, Any] | None = None, executor: str = "local",
                  workers: int | None = None) -> Events:
    """Score every series `spec` names (or a list of Series) into the cube at `out`; hub histories
    are listed and reported first, then fetched checkpoint by checkpoint."""
    from ..sources import is_hub

    if executor not in ("local", "ray"):
        raise RedundancyError(f"--executor {executor!r} is not one of local, ray")
    store = CubeStore.open(out, settings.calibration())  # refuse a bad --out before any work (or network)
    fetcher = _fetcher(hub_args, fetch_args or {}) if isinstance(spec, str) and is_hub(spec) else None
    serieses = spec if isinstance(spec, list) else _open(spec, hub_args or {})
    with bars() as progress:
        if fetcher is not None:
            _report(serieses)
        written = [w for s in serieses for w in _score_one(s, store, settings, progress, fetcher, executor,
                                                           workers).written]
    total = sum(len(s.checkpoints) for s in serieses) * len(settings.datasets)
    console.print(f"{len(written)} cells written to {out} ({total - len(written)} already there)")
    return Events(written=written)


def _open(spec: str, hub_args: dict[str, Any]) -> list:
    """The series of `spec`, with a bar only while something reports progress (training builtin:tiny,
    listing a hub history): a series refused at once prints its one-line error and nothing else."""
    from ..sources import open_all

    shown: dict[str, Any] = {}

    def report(what: str, done: int, total: int) -> None:
        if not shown:
            shown["bars"] = bars()
            shown["bars"].live.transient = True  # gone once the series is ready, as before scoring
            shown["bars"].start()
            shown["task"] = shown["bars"].add_task(what, total=None)
        shown["bars"].update(shown["task"], description=what, completed=done, total=total)

    try:
        return open_all(spec, report, **hub_args)
    finally:
        if shown:
            shown["bars"].stop()


def _fetcher(hub_args: dict | None, fetch_args: dict[str, Any]):
    from ..sources._fetch import HubFetcher

    hub_args = hub_args or {}
    return HubFetcher(fetch_args.get("cache_dir"), hub_args.get("token"), hub_args.get("endpoint"),
                      fetch_args.get("keep", False), fetch_args.get("tokenizer"))


def _report(serieses: list) -> None:
    """What each hub selection holds, and every integrity flag, before anything is downloaded."""
    from .info import flag_report

    for series in serieses:
        dups = sum(c.duplicate_of is not None for c in series.checkpoints)
        console.print(f"{series.model}: {len(series.checkpoints)} checkpoints selected "
                      f"({dups} byte-identical to another)")
        for line in flag_report(series.checkpoints):
            console.print(line)


def _score_one(series, store: CubeStore, settings: ScoreSettings, progress: Progress, fetcher, executor: str,
               workers: int | None) -> Events:
    ckpts = progress.add_task(f"checkpoints of {series.model}", total=len(series.checkpoints))
    batch = progress.add_task("samples", total=None)

    def on_ckpt(ckpt, state: str) -> None:
        progress.update(ckpts, description=f"step {ckpt.step} of {series.model}: {state}",
                        advance=int(state != "scoring"))

    events = Events(checkpoint=on_ckpt,
                    dataset=lambda name, n: progress.reset(batch, total=n, description=f"samples of {name}"),
                    batches=lambda n: progress.advance(batch, n), log=lambda msg: progress.console.print(msg))
    if executor == "ray":  # per-batch progress stays in the workers: checkpoints only
        from ..pipeline.ray_executor import score_series_ray

        progress.remove_task(batch)
        score_series_ray(series, store.path, settings, events, fetcher=fetcher, num_workers=workers)
    else:
        score_series(series, store, settings, events, fetcher)
        progress.remove_task(batch)
    return events


def order_command(series_spec: str, store_path: Path, settings_args: dict, steps: list[int],
                  modules: list[str], metric: str) -> list:
    """Iterative and one-shot orders for the chosen steps, with the store's calibration settings."""
    from ..families import MODULES
    from ..pipeline import make_settings, order_series
    from ..scoring import METRICS
    from ..sources import open_series

    for m in modules:
        if m not in MODULES:
            raise RedundancyError(f"--module {m!r} is not one of {', '.join(MODULES)}")
    METRICS.get(metric)
    stored = CubeStore.open(store_path).settings()
    settings = make_settings(samples=stored["n_samples"], seq_len=stored["seq_len"], seed=stored["seed"],
                             **settings_args)
    store = CubeStore.open(store_path, settings.calibration())
    written = order_series(open_series(series_spec), store, settings, steps, modules, metric,
                           Events(log=lambda msg: console.print(msg)))
    console.print(f"{len(written)} order cells written to {store_path}")
    return written
