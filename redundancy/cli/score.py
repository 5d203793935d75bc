"""`score` (any series into the cube), `crawl` (= score on a hub history, with the crawl run preset)
and `order` (iterative dropping orders beside the scores). Options come from ScoreSettings,
Selection and HubAccess (redundancy/settings.py); the work from pipeline.score_history and
order_history."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import typer

from ..settings import ScoreSettings
from . import _options as o
from ._app import command


def _scorer(name: str, what: str, doc: str) -> Callable:
    """The score command under `name`, its defaults from run preset `name` (run_presets.yaml)."""
    def s(field: str):
        return o.setting(ScoreSettings, field, preset=name)

    @command(name)
    def run(series: str = typer.Argument(..., help=what),
            out: str = o.cube("cube store to write into: a zarr folder, or s3://BUCKET/PATH (obstore; "
                              "credentials and AWS_ENDPOINT_URL from the environment)", ..., "--out", "-o"),
            datasets: List[str] = s("datasets"), text_field: str = s("text_field"),
            metrics: List[str] = s("metrics"), samples: int = s("n_samples"), seq_len: int = s("seq_len"),
            batch_size: int = s("batch_size"), seed: int = s("seed"), device: str = s("device"),
            dtype: str = s("dtype"), layerwise: bool = s("layerwise"),
            executor: str = o.EXECUTOR, workers: Optional[int] = o.WORKERS,
            preset: Optional[str] = o.PRESET, pattern: Optional[str] = o.PATTERN,
            tokens_per_step: Optional[float] = o.TPS, every: Optional[str] = o.EVERY,
            steps: List[int] = o.STEPS, max_n: Optional[int] = o.MAXN, stages: List[str] = o.STAGE,
            token: Optional[str] = o.TOKEN, endpoint: Optional[str] = o.ENDPOINT,
            cache_dir: Optional[Path] = o.CACHE_DIR, keep: bool = o.KEEP,
            tokenizer: Optional[str] = o.TOKENIZER) -> None:
        from ..settings import HubAccess
        from ._scoring import score_command

        spec = series if ":" in series or name != "crawl" else f"hub:{series}"
        settings = ScoreSettings(datasets=datasets, n_samples=samples, seq_len=seq_len, batch_size=batch_size,
                                 seed=seed, device=device, dtype=dtype, metrics=metrics, layerwise=layerwise,
                                 text_field=text_field)
        selection = o.selection(preset=preset, pattern=pattern, tokens_per_step=tokens_per_step, every=every,
                                steps=steps, max_n=max_n, stages=stages)
        access = HubAccess(token=token, endpoint=endpoint, cache_dir=cache_dir, keep=keep,
                           tokenizer=tokenizer)
        score_command(spec, out, settings, selection=selection, access=access, executor=executor,
                      workers=workers)
    run.__doc__ = doc
    return run


score = _scorer("score", "builtin:tiny, local:DIR (a folder per step), hub:ORG/NAME (a hub history), "
                "suite:NAME (several runs: tiny-seeds, polypythia-160m, ...)",
                "Score every checkpoint of SERIES on every calibration set; finished cells are skipped. "
                "A hub history is listed and selected first (nothing downloaded), then each checkpoint is "
                "fetched while the previous one is scored.")
crawl = _scorer("crawl", "hub repo id (hub: implied), an author or repos joined by commas (one repo per "
                "step), or suite:NAME",
                "`score hub:REPO` with the study's settings (c4, 256 windows of 2048 tokens, bfloat16): the "
                "selected checkpoints of a hub history into the cube, resumable.")


def _S(field: str):  # noqa: N802 - an option of ScoreSettings, as declared there
    return o.setting(ScoreSettings, field)


@command()
def order(series: str = typer.Argument(..., help="the series the store was scored from (builtin:, local:, "
                                       "hub:ORG/NAME, suite:)"),
          out: str = o.cube("the cube store (a folder or s3://BUCKET/PATH)", ..., "--out", "-o"),
          iterative: bool = typer.Option(True, help="also compute the iterative order (drop, re-score)"),
          steps: List[int] = typer.Option([], "--step", help="steps to order (repeat; default: the last)",
                                          callback=o.at_least(0)),
          datasets: List[str] = _S("datasets"),
          modules: List[str] = typer.Option(["block", "attn", "mlp"], "--module", help="block, attn or mlp",
                                            callback=o.one_of("module", o.modules)),
          metric: str = o.metric("importance", "the metric whose scores order the modules"),
          batch_size: int = _S("batch_size"), device: str = _S("device"), dtype: str = _S("dtype"),
          text_field: str = _S("text_field"),
          preset: Optional[str] = o.PRESET, pattern: Optional[str] = o.PATTERN,
          tokens_per_step: Optional[float] = o.TPS, every: Optional[str] = o.EVERY,
          max_n: Optional[int] = o.MAXN, stages: List[str] = o.STAGE,
          token: Optional[str] = o.TOKEN, endpoint: Optional[str] = o.ENDPOINT,
          cache_dir: Optional[Path] = o.CACHE_DIR, keep: bool = o.KEEP,
          tokenizer: Optional[str] = o.TOKENIZER) -> None:
    """Store one-shot and iterative dropping orders next to the scores (variable drop_order), for the
    chosen --step (default: the last). A hub history is selected and fetched as `score` does."""
    from ..errors import RedundancyError
    from ..settings import HubAccess
    from ._scoring import order_command

    if not iterative:
        raise RedundancyError("one-shot orders need no model: use redundancy.drop_order on the cube")
    settings = ScoreSettings(datasets=datasets, batch_size=batch_size, device=device, dtype=dtype,
                             text_field=text_field)
    selection = o.selection(preset=preset, pattern=pattern, tokens_per_step=tokens_per_step, every=every,
                            steps=[], max_n=max_n, stages=stages)
    access = HubAccess(token=token, endpoint=endpoint, cache_dir=cache_dir, keep=keep, tokenizer=tokenizer)
    order_command(series, out, settings, steps=steps, modules=modules, metric=metric, selection=selection,
                  access=access)
