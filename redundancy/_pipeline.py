"""Score a series into a cube: sources -> calibration -> scoring -> cube, resumable per cell."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Callable, Sequence

import torch

from .calibration import calibration_tokens
from .cube import CubeStore, make_cell
from .errors import CalibrationError
from .scoring import DEFAULT_METRICS, Scorer
from .sources import Checkpoint, Series

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ScoreSettings:
    """What to score and how. `n_samples` windows of `seq_len` tokens per calibration set."""

    datasets: Sequence[str] = ("prose", "code", "math")
    n_samples: int = 32
    seq_len: int = 128
    batch_size: int = 8
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    metrics: Sequence[str] = DEFAULT_METRICS

    def calibration(self) -> dict[str, Any]:
        from .calibration._packing import POOL_FACTOR
        return dict(n_samples=self.n_samples, seq_len=self.seq_len, seed=self.seed,
                    pool_factor=POOL_FACTOR,
                    packing="documents joined with EOS, windows without overlap, no BOS")


@dataclass
class Events:
    """Progress callbacks; all optional. `checkpoint` gets "scoring", "scored" or "done already";
    `batches` gets the number of samples scored in each batch."""

    checkpoint: Callable[[Checkpoint, str], None] = lambda ckpt, state: None
    dataset: Callable[[str, int], None] = lambda name, n: None
    batches: Callable[[int], None] = lambda n: None
    log: Callable[[str], None] = lambda msg: None
    written: list[tuple[int, str]] = field(default_factory=list)


def load_checkpoint(ckpt: Checkpoint, device: str, dtype: str):
    """(model, tokenizer) of one checkpoint, in eval mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(ckpt.path, dtype=DTYPES[dtype])
    return model.to(device).eval(), AutoTokenizer.from_pretrained(ckpt.path)


def score_series(series: Series, store: CubeStore, settings: ScoreSettings,
                 events: Events | None = None) -> Events:
    """Score every (checkpoint, dataset) cell not yet in `store`; returns events with what was written."""
    ev = events or Events()
    store.clean_partial()
    for ckpt in series.checkpoints:
        todo = [d for d in settings.datasets if not store.has_cell(series.model, ckpt.step, d)]
        ev.checkpoint(ckpt, "scoring" if todo else "done already")
        if todo:
            _score_checkpoint(series.model, ckpt, todo, store, settings, ev)
            ev.checkpoint(ckpt, "scored")
    return ev


def _score_checkpoint(model_name: str, ckpt: Checkpoint, datasets: list[str], store: CubeStore,
                      s: ScoreSettings, ev: Events) -> None:
    model, tokenizer = load_checkpoint(ckpt, s.device, s.dtype)
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and s.seq_len > context:
        raise CalibrationError(f"--seq-len {s.seq_len} is longer than {model_name} step {ckpt.step}'s "
                               f"context of {context} tokens; use --seq-len {context} or less")
    scorer = Scorer(model, s.metrics)
    for name in datasets:
        calib = calibration_tokens(name, tokenizer, s.n_samples, s.seq_len, s.seed)
        ev.dataset(name, s.n_samples)
        scores = scorer.score(calib.tokens, s.batch_size, on_batch=ev.batches)
        cell = make_cell(scores, scorer.metric_names, model=model_name, step=ckpt.step, dataset=name,
                         tokens=ckpt.tokens, provenance=_provenance(ckpt, calib.fingerprint, s))
        if store.write_cell(cell):
            ev.written.append((ckpt.step, name))


def _provenance(ckpt: Checkpoint, fingerprint: str, s: ScoreSettings) -> dict[str, str]:
    return dict(fingerprint=fingerprint, dtype=s.dtype, device=s.device,
                revision=ckpt.commit or ckpt.revision or "", package_version=version("redundancy"),
                scored_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
