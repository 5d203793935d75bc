"""What a scoring run reports (Events); the Fetcher interface that makes a checkpoint's files local;
ScoreSettings (declared in redundancy/settings.py) re-exported."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..settings import DTYPE_NAMES, ScoreSettings
from ..sources import Checkpoint, Series

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # "float32" -> torch.float32, ...
__all__ = ["DTYPES", "ScoreSettings", "Events", "Fetcher", "make_settings"]


@dataclass
class Events:
    """Progress callbacks; all optional. `checkpoint` gets "scoring", "scored" or "done already";
    `batches` gets the number of samples scored in each batch."""

    checkpoint: Callable[[Checkpoint, str], None] = lambda ckpt, state: None
    dataset: Callable[[str, int], None] = lambda name, n: None
    batches: Callable[[int], None] = lambda n: None
    log: Callable[[str], None] = lambda msg: None
    written: list[tuple[int, str]] = field(default_factory=list)
    # whole runs (pipeline.run): opening a spec (training builtin:tiny, listing a hub history: what,
    # done, total), a hub selection made (before any download), a series about to be scored
    opening: Callable[[str, int, int], None] = lambda what, done, total: None
    selected: Callable[[Series], None] = lambda series: None
    series: Callable[[Series], None] = lambda series: None


class Fetcher:
    """Makes a checkpoint's files local before scoring and may free them after. Local series need
    nothing; the hub crawler downloads (in a background thread, overlapping the scoring)."""

    def fetch(self, ckpt: Checkpoint) -> Checkpoint:
        """`ckpt` with local files (here: `ckpt` as it is). Raises nothing on purpose; a fetcher that
        downloads (sources._fetch.HubFetcher) raises SeriesError when the files cannot be had."""
        return ckpt

    def release(self, ckpt: Checkpoint) -> None:
        """Free what `fetch` made local for `ckpt` (here: nothing). Raises nothing on purpose."""
        return None


def make_settings(datasets: Sequence[str], samples: int, seq_len: int, batch_size: int, seed: int,
                  device: str, dtype: str, layerwise: bool = False, text_field: str = "text",
                  metrics: Sequence[str] = ()) -> ScoreSettings:
    """ScoreSettings from the CLI's names (kept for callers of 0.1; build ScoreSettings directly).
    Raises what ScoreSettings raises."""
    return ScoreSettings(datasets=datasets, n_samples=samples, seq_len=seq_len, batch_size=batch_size,
                         seed=seed, device=device, dtype=dtype, layerwise=layerwise, text_field=text_field,
                         metrics=metrics)
