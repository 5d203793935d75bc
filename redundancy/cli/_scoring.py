"""Progress bars and summaries for `score`, `crawl` and `order`; the work is pipeline.score_history
and order_history."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..pipeline import Events
from ..settings import HubAccess, ScoreSettings, Selection
from ._console import bars, console


def score_command(spec: str | list, out: str | Path, settings: ScoreSettings, *,
                  selection: Selection | None = None, access: HubAccess | None = None,
                  executor: str = "local", workers: int | None = None) -> Events:
    """pipeline.score_history with progress bars: a transient bar while a series is made ready,
    each hub selection printed before any download, a bar of checkpoints and one of samples."""
    from ..pipeline import score_history

    serieses: list = []
    opening, progress = _Opening(), bars()  # one live display at a time: the scoring bars start after
    ckpts = progress.add_task("checkpoints", total=None)
    batch = progress.add_task("samples", total=None, visible=executor == "local")  # Ray: in the workers

    def on_series(series) -> None:
        opening.stop()
        if not serieses:
            progress.start()
        serieses.append(series)
        progress.reset(ckpts, total=len(series.checkpoints), description=f"checkpoints of {series.model}")

    def on_ckpt(ckpt, state: str) -> None:
        progress.update(ckpts, description=f"step {ckpt.step} of {serieses[-1].model}: {state}",
                        advance=int(state != "scoring"))

    def on_dataset(name: str, n: int) -> None:
        progress.reset(batch, total=n, description=f"samples of {name}")

    events = Events(checkpoint=on_ckpt, opening=opening.update, series=on_series,
                    selected=lambda s: (opening.stop(), _report(s)), dataset=on_dataset,
                    batches=lambda n: progress.advance(batch, n), log=lambda msg: progress.console.print(msg))
    try:
        score_history(spec, out=out, settings=settings, selection=selection, access=access, executor=executor,
                      workers=workers, events=events)
    finally:
        opening.stop()
        if serieses:  # started
            progress.stop()
    total = sum(len(s.checkpoints) for s in serieses) * len(settings.datasets)
    done = len(events.written)
    console.print(f"{done} cells written to {out} ({total - done} already there)")
    return events


class _Opening:
    """A transient bar, shown only while something reports progress (training builtin:tiny, listing a
    hub history): a series refused at once prints its one-line error and nothing else."""

    def __init__(self) -> None:
        self.bars: Any = None

    def update(self, what: str, done: int, total: int) -> None:
        if self.bars is None:
            self.bars = bars()
            self.bars.live.transient = True  # gone once the series is ready, as before scoring
            self.bars.start()
            self.task = self.bars.add_task(what, total=None)
        self.bars.update(self.task, description=what, completed=done, total=total)

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None

    def __enter__(self) -> "_Opening":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _report(series) -> None:
    """What a hub selection holds, and every integrity flag, before anything is downloaded."""
    from .info import flag_report

    dups = sum(c.duplicate_of is not None for c in series.checkpoints)
    console.print(f"{series.model}: {len(series.checkpoints)} checkpoints selected "
                  f"({dups} byte-identical to another)")
    for line in flag_report(series.checkpoints):
        console.print(line)


def order_command(spec: str, out: str | Path, settings: ScoreSettings, *, steps: Sequence[int],
                  modules: Sequence[str], metric: str, selection: Selection | None = None,
                  access: HubAccess | None = None) -> list:
    """pipeline.order_history, printing each step's progress and what was written."""
    from ..pipeline import order_history

    events = Events(log=lambda msg: console.print(msg))
    written = order_history(spec, out=out, settings=settings, steps=steps, modules=modules, metric=metric,
                            selection=selection, access=access, events=events)
    console.print(f"{len(written)} order cells written to {out}")
    return written
