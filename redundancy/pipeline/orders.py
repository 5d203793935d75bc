"""Store one-shot and iterative dropping orders next to the scores they come from."""
from __future__ import annotations

from typing import Sequence

from ..calibration import calibration_tokens
from ..cube import CubeStore, make_order_cell
from ..drop import iterative_order
from ..errors import SeriesError
from ..orders import drop_order
from ..scoring import Scorer
from ..sources import Checkpoint, Series
from ._plan import prefetched
from .score import _score_checkpoint, load_checkpoint
from .settings import Events, Fetcher, ScoreSettings


def _one_shot(store: CubeStore, model: str, step: int, dataset: str, module: str,
              metric: str) -> list[int]:
    """The one-shot order of one stored cell (redundancy.orders.drop_order: lowest mean first)."""
    cell = store.read_cell(model, step, dataset)
    order = drop_order(cell.sel(module=module), metric=metric).values  # (rank,) layers
    return [int(i) for i in order if i >= 0]


def order_series(series: Series, store: CubeStore, settings: ScoreSettings, *,
                 steps: Sequence[int] | None = None,
                 modules: Sequence[str] = ("block", "attn", "mlp"), metric: str = "importance",
                 events: Events | None = None, fetcher: Fetcher | None = None) -> list[tuple[int, str]]:
    """For each chosen step (default: the last) and calibration set: one-shot and iterative orders
    into `store` (variable drop_order, dims (strategy, module, rank)); returns the (step, dataset)
    cells written. Checkpoints are fetched as `score_series` fetches them (`fetcher`: a hub history's
    downloads, the next one while the current one is ordered).

    Raises SeriesError (a step the series has not), NotFoundError (an unknown module or metric),
    and what score_series raises."""
    from .._registry import check_name
    from ..families import MODULES
    from ..scoring import METRICS

    for m in modules:
        check_name("module", m, MODULES)
    METRICS.get(metric)
    ev = events or Events()
    by_step = {c.step: c for c in series.checkpoints}
    wanted = [series.checkpoints[-1].step] if not steps else list(steps)
    missing = [s for s in wanted if s not in by_step]
    if missing:
        raise SeriesError(f"{series.model} has no step {missing[0]}; it has {sorted(by_step)}")
    written, todo = [], {}
    for step in wanted:
        todo[step] = [d for d in settings.sets() if not store.has_cell(series.model, step, d, kind="orders")]
        if not todo[step]:
            ev.checkpoint(by_step[step], "done already")
    for ckpt, ready in prefetched([by_step[s] for s in wanted if todo[s]], fetcher):
        ev.checkpoint(ckpt, "ordering")
        written += _order_checkpoint(series.model, ready, datasets=todo[ckpt.step], store=store, s=settings,
                                     modules=modules, metric=metric, ev=ev)
    return written


def _order_checkpoint(name: str, ckpt: Checkpoint, datasets: list[str], store: CubeStore, s: ScoreSettings,
                      modules: Sequence[str], metric: str, ev: Events) -> list[tuple[int, str]]:
    unscored = [d for d in datasets if not store.has_cell(name, ckpt.step, d)]
    if unscored:
        _score_checkpoint(name, ckpt, datasets=unscored, store=store, s=s, ev=ev)
    model, tokenizer = load_checkpoint(ckpt, device=s.device, dtype=s.dtype)
    scorer = Scorer(model, s.metrics)
    written = []
    sets = s.sets()  # resolved once, in the settings
    for dataset in datasets:
        calib = calibration_tokens(sets[dataset], tokenizer, n=s.n_samples, seq_len=s.seq_len, seed=s.seed,
                                   text_field=s.text_field)
        tokens = calib.tokens
        orders = {}
        for module in modules:
            ev.log(f"iterative {module} order, step {ckpt.step}, {dataset}")
            orders[("one-shot", module)] = _one_shot(store, name, step=ckpt.step, dataset=dataset,
                                                     module=module, metric=metric)
            orders[("iterative", module)] = iterative_order(scorer, tokens, module, batch_size=s.batch_size,
                                                            metric=metric)
        cell = make_order_cell(orders, scorer.n_layers, model=name, step=ckpt.step, dataset=dataset,
                               metric=metric)
        if store.write_cell(cell, kind="orders"):
            written.append((ckpt.step, dataset))
    return written
