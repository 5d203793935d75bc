"""`score` (any series into the cube), `crawl` (= score on a hub history, with the study's defaults)
and `order` (iterative dropping orders beside the scores)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import typer

from . import _options as o
from ._app import command


def _scorer(name: str, what: str, defaults: dict) -> Callable:
    """The score command under `name`, with its own defaults; every option declared once."""
    @command(name)
    def run(series: str = typer.Argument(..., help=what),
            out: str = o.cube("cube store to write into: a zarr folder, or s3://BUCKET/PATH (obstore; "
                              "credentials and AWS_ENDPOINT_URL from the environment)", ..., "--out", "-o"),
            datasets: List[str] = typer.Option(defaults["datasets"], "--dataset", "-d", help=o.DATASETS_HELP),
            text_field: str = o.TEXT_FIELD, metrics: List[str] = o.METRICS,
            samples: int = o.count(defaults["samples"], "calibration windows per set"),
            seq_len: int = o.count(defaults["seq_len"], "tokens per window (2 or more)", minimum=2),
            batch_size: int = o.count(defaults["batch_size"], "windows per forward pass"),
            seed: int = o.SEED, device: str = o.DEVICE, dtype: str = o.dtype(defaults["dtype"]),
            layerwise: bool = o.LAYERWISE, executor: str = o.EXECUTOR, workers: Optional[int] = o.WORKERS,
            preset: Optional[str] = o.PRESET, pattern: Optional[str] = o.PATTERN,
            tokens_per_step: Optional[float] = o.TPS, every: Optional[str] = o.EVERY,
            steps: List[int] = o.STEPS, max_n: Optional[int] = o.MAXN, stages: List[str] = o.STAGE,
            token: Optional[str] = o.TOKEN, endpoint: Optional[str] = o.ENDPOINT,
            cache_dir: Optional[Path] = o.CACHE_DIR, keep: bool = o.KEEP,
            tokenizer: Optional[str] = o.TOKENIZER) -> None:
        from ..pipeline import make_settings
        from ._scoring import score_command

        spec = series if ":" in series or name != "crawl" else f"hub:{series}"
        settings = make_settings(datasets, samples, seq_len, batch_size, seed, device, dtype, layerwise,
                                 text_field, metrics)
        score_command(spec, out, settings, o.hub_args(preset, pattern, tokens_per_step, every, steps, max_n,
                                                      token, endpoint, stages),
                      dict(cache_dir=cache_dir, keep=keep, tokenizer=tokenizer), executor, workers)
    run.__doc__ = defaults["doc"]
    return run


score = _scorer("score", "builtin:tiny, local:DIR (a folder per step), hub:ORG/NAME (a hub history), "
                "suite:NAME (several runs: tiny-seeds, polypythia-160m, ...)",
                dict(datasets=["prose", "code", "math"], samples=32, seq_len=128, batch_size=8,
                     dtype="float32",
                     doc="Score every checkpoint of SERIES on every calibration set; finished cells are "
                     "skipped. A hub history is listed and selected first (nothing downloaded), then each "
                     "checkpoint is fetched while the previous one is scored."))
crawl = _scorer("crawl", "hub repo id (hub: implied), an author or repos joined by commas (one repo per "
                "step), or suite:NAME",
                dict(datasets=["c4"], samples=256, seq_len=2048, batch_size=4, dtype="bfloat16",
                     doc="`score hub:REPO` with the study's settings (c4, 256 windows of 2048 tokens, "
                     "bfloat16): the selected checkpoints of a hub history into the cube, resumable."))


@command()
def order(series: str = typer.Argument(..., help="the series the store was scored from"),
          out: str = o.cube("the cube store (a folder or s3://BUCKET/PATH)", ..., "--out", "-o"),
          iterative: bool = typer.Option(True, help="also compute the iterative order (drop, re-score)"),
          steps: List[int] = typer.Option([], "--step", help="steps to order (default: the last)",
                                          callback=o.at_least(0)),
          datasets: List[str] = typer.Option(["prose", "code", "math"], "--dataset", "-d",
                                             help="calibration sets of the cube to order on"),
          modules: List[str] = typer.Option(["block", "attn", "mlp"], "--module", help="block, attn or mlp",
                                            callback=o.one_of("module", o.modules)),
          metric: str = o.metric("importance", "the metric whose scores order the modules"),
          batch_size: int = o.count(8, "windows per forward pass"), device: str = o.DEVICE,
          dtype: str = o.dtype("float32")) -> None:
    """Store one-shot and iterative dropping orders next to the scores (variable drop_order)."""
    from ..errors import RedundancyError
    from ._scoring import order_command

    if not iterative:
        raise RedundancyError("one-shot orders need no model: use analyses.drop_order on the cube")
    order_command(series, out, dict(datasets=datasets, batch_size=batch_size, device=device, dtype=dtype),
                  steps, modules, metric)
