"""What a scoring run is asked to do (ScoreSettings, checked from user input) and what it reports
(Events); the Fetcher interface that makes a checkpoint's files local."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .._device import check_device
from ..errors import RedundancyError
from ..scoring import DEFAULT_METRICS
from ..sources import Checkpoint

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
    layerwise: bool = False  # one decoder layer on the device at a time (models larger than the device)
    text_field: str = "text"  # the field read from local files and hub specs

    def sets(self) -> dict[str, str]:
        """Each calibration set's short name (the cube's `dataset` label) -> the spec given."""
        from ..calibration import resolve_set
        return {resolve_set(d, self.text_field).name: d for d in self.datasets}

    def calibration(self) -> dict[str, Any]:
        """The settings every cell of one cube must share (see cube.SETTINGS_KEYS)."""
        from ..calibration._packing import PACKING, POOL_FACTOR
        return dict(n_samples=self.n_samples, seq_len=self.seq_len, seed=self.seed,
                    pool_factor=POOL_FACTOR, packing=PACKING)


@dataclass
class Events:
    """Progress callbacks; all optional. `checkpoint` gets "scoring", "scored" or "done already";
    `batches` gets the number of samples scored in each batch."""

    checkpoint: Callable[[Checkpoint, str], None] = lambda ckpt, state: None
    dataset: Callable[[str, int], None] = lambda name, n: None
    batches: Callable[[int], None] = lambda n: None
    log: Callable[[str], None] = lambda msg: None
    written: list[tuple[int, str]] = field(default_factory=list)


class Fetcher:
    """Makes a checkpoint's files local before scoring and may free them after. Local series need
    nothing; the hub crawler downloads (in a background thread, overlapping the scoring)."""

    def fetch(self, ckpt: Checkpoint) -> Checkpoint:
        return ckpt

    def release(self, ckpt: Checkpoint) -> None:
        return None


def make_settings(datasets: Sequence[str], samples: int, seq_len: int, batch_size: int, seed: int,
                  device: str, dtype: str, layerwise: bool = False, text_field: str = "text",
                  metrics: Sequence[str] = ()) -> ScoreSettings:
    """Settings from user input, every bad value a one-line error before any work.

    Raises NotFoundError (an unknown calibration set, metric or dtype, with the closest name),
    CalibrationError (a set's file missing or unreadable), RedundancyError (two sets with one name,
    --samples or --batch-size below 1, --seq-len below 2, --seed below 0, an unusable --device).
    """
    from .._registry import check_name
    from ..calibration import resolve_set
    from ..scoring import METRICS

    for flag, value, least in (("--samples", samples, 1), ("--seq-len", seq_len, 2),
                               ("--batch-size", batch_size, 1), ("--seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise RedundancyError(f"{flag} {value!r}: must be a whole number of at least {least}")
    check_name("dtype", dtype, DTYPES)
    datasets = list(dict.fromkeys(datasets))
    names = [resolve_set(spec, text_field).name for spec in datasets]  # a missing file fails here
    if len(set(names)) != len(names):
        raise RedundancyError(f"two calibration sets share the name {max(names, key=names.count)!r}; "
                              "rename one of the files")
    check_device(device)
    for m in metrics:
        METRICS.get(m)  # "did you mean" on a typo
    return ScoreSettings(tuple(datasets), samples, seq_len, batch_size, seed, device, dtype,
                         metrics=tuple(dict.fromkeys(metrics)) or DEFAULT_METRICS, layerwise=layerwise,
                         text_field=text_field)
