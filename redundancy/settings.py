"""What a scoring run is asked to do: ScoreSettings (what to score and how), Selection (which
checkpoints of a history), HubAccess (how the hub is reached), each option declared once (default,
help, command-line names, check) with `_settings.setting`. Built = valid. (StudySettings:
redundancy/study/settings.py.)

Light on purpose (no torch): the CLI builds its options from these classes when it starts.
Run presets (`redundancy/data/run_presets.yaml`: crawl, demo, ...) set other defaults by name:
`ScoreSettings.from_preset("crawl")`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ._settings import Settings, at_least, device, metric_names, one_of, setting
from .errors import RedundancyError

__all__ = ["ScoreSettings", "Selection", "HubAccess", "DTYPE_NAMES"]

DTYPE_NAMES = ("float32", "bfloat16", "float16")

DATASETS_HELP = ("calibration set: a name (`redundancy datasets`), a file or folder "
                 "(.jsonl .json .parquet .csv .txt), or hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]; "
                 "repeat for several")
METRICS_HELP = ("metrics to store (repeat); default: importance, importance_no_residual, angular_distance, "
                "relative_magnitude; exact ablation: loss_delta, kl; first-order estimate: loss_delta_grad")


# ---- checks that read the library's lists when a settings object is built --------------------------

def _metrics(value: Sequence[str], label: str) -> tuple[str, ...]:
    """The metrics asked for, each once ("did you mean" on a typo); none: scoring.DEFAULT_METRICS."""
    if not value:
        from .scoring import DEFAULT_METRICS
        return tuple(DEFAULT_METRICS)
    return one_of("metric", metric_names, many=True)(value, label)


def _specs(value: Sequence[str], label: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value:
        raise RedundancyError(f"{label}: give a list of one or more calibration sets, got {value!r}")
    return tuple(dict.fromkeys(value))


# ---- the settings -----------------------------------------------------------------------------------

@dataclass
class ScoreSettings(Settings):
    """What to score and how: `n_samples` windows of `seq_len` tokens per calibration set, scored in
    batches of `batch_size` on `device` in `dtype`. Built = valid: every field is checked, and each
    calibration set resolved once (a local file read for its digest), when the object is made.

    Raises NotFoundError (an unknown calibration set, metric or dtype, with the closest name),
    CalibrationError (a set's file missing or unreadable), RedundancyError (two sets with one name,
    a count below its minimum, an unusable device).
    """

    datasets: Sequence[str] = setting(["prose", "code", "math"], DATASETS_HELP, "--dataset", "-d",
                                      check=_specs)
    n_samples: int = setting(32, "calibration windows per set", "--samples", check=at_least(1))
    seq_len: int = setting(128, "tokens per window (2 or more)", "--seq-len", check=at_least(2))
    batch_size: int = setting(8, "windows per forward pass", "--batch-size", check=at_least(1))
    seed: int = setting(0, "seed choosing the windows (0 or more)", "--seed", check=at_least(0))
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...", "--device", check=device)
    dtype: str = setting("float32", "float32, bfloat16 or float16", "--dtype",
                         check=one_of("dtype", lambda: DTYPE_NAMES))
    metrics: Sequence[str] = setting([], METRICS_HELP, "--metric", check=_metrics)
    layerwise: bool = setting(False, "one decoder layer on the device at a time (models larger than the "
                              "device)", "--layerwise/--no-layerwise")
    text_field: str = setting("text", "the field holding the text in files and hub rows", "--text-field")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._resolved: dict[str, Any] | None = None
        if len(self.sets()) != len(self.datasets):  # every set resolved here, once: a missing file fails now
            from .calibration import resolve_set
            short = [resolve_set(d, text_field=self.text_field).name for d in self.datasets]
            raise RedundancyError(f"two calibration sets share the name {max(short, key=short.count)!r}; "
                                  "rename one of the files")

    def sets(self) -> dict[str, Any]:
        """Each calibration set's short name (the cube's `dataset` label) -> its resolved
        `calibration.CalibrationSet` (name, source, documents), resolved once per settings object.
        Raises NotFoundError (an unknown set name), CalibrationError (a missing or unreadable file)."""
        if self._resolved is None:
            from .calibration import resolve_set
            resolved = [resolve_set(spec, text_field=self.text_field) for spec in self.datasets]
            self._resolved = {cset.name: cset for cset in resolved}
        return self._resolved

    def specs(self) -> dict[str, str]:
        """Each calibration set's short name -> the spec as given (a name, a path, hf:...). Raises what
        `sets` raises."""
        return dict(zip(self.sets(), self.datasets))

    def calibration(self) -> dict[str, Any]:
        """The settings every cell of one cube must share (see cube.SETTINGS_KEYS). Raises nothing on
        purpose."""
        from .calibration._packing import PACKING, POOL_FACTOR
        return dict(n_samples=self.n_samples, seq_len=self.seq_len, seed=self.seed,
                    pool_factor=POOL_FACTOR, packing=PACKING)

    def __getstate__(self) -> dict[str, Any]:
        # a resolved set holds its reader (a closure): a pickled copy (a Ray task) resolves again
        return {**self.__dict__, "_resolved": None}


# ---- which checkpoints of a history, and how to reach the hub -------------------------------------------

NAMES = "Step names (hub histories and local:DIR folders)"
HUB = "Hub histories (hub:ORG/NAME and hub suites)"


def _series_preset(value: str | None, label: str) -> str | None:
    from .sources import PRESETS
    return one_of("series preset", PRESETS.names, optional=True)(value, label)


def _pattern(value: str | None, label: str) -> str | None:
    from .sources._presets import check_pattern
    return None if value is None else check_pattern(value)


def _tokens_per_step(value: float | None, label: str) -> float | None:
    from .sources._presets import check_tokens_per_step
    return check_tokens_per_step(value)


def _every(value: str | None, label: str) -> str | None:
    """A token count above 0 ('500B'), as the library reads it; kept as written."""
    from .sources._select import grid_spacing
    if value is not None:
        grid_spacing(value)
    return value


def _max_n(value: int | None, label: str) -> int | None:
    from .sources._select import check_max_n
    return check_max_n(value)


def _steps(value: Sequence[int], label: str) -> tuple[int, ...]:
    return tuple(at_least(0)(v, label) for v in value or ())


def _folder_or_new(value: Any, label: str) -> Any:
    from pathlib import Path

    from .errors import OutputError
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise OutputError(f"{label} {value}: is a file, not a folder")
    return value


@dataclass
class Selection(Settings):
    """Which checkpoints of a history to take and how its names read: `preset` (a series preset:
    pythia, olmo, ...), `pattern` and `tokens_per_step` for names no preset knows (local:DIR folders
    take these three), then, for hub histories, a token grid (`every`), exact `steps`, at most `max_n`
    evenly spread, training `stages`. Raises SeriesError or NotFoundError naming the option."""

    preset: str | None = setting(None, "a name from `redundancy list --help`'s presets: pythia, olmo, olmo2, "
                                 "olmo3, smollm3, map-neo, tinyllama, ...; for local:DIR, how folder names "
                                 "read", "--preset", check=_series_preset, panel=NAMES)
    pattern: str | None = setting(None, "regex with (?P<step>...) (and maybe (?P<tokens>...), "
                                  "(?P<stage>...)) for branch or folder names no preset knows", "--pattern",
                                  check=_pattern, panel=NAMES)
    tokens_per_step: float | None = setting(None, "tokens per step when names do not say (above 0)",
                                            "--tokens-per-step", check=_tokens_per_step, panel=NAMES)
    every: str | None = setting(None, "token grid, e.g. 500B: the checkpoint nearest each point", "--every",
                                check=_every, panel=HUB)
    steps: Sequence[int] = setting([], "exact steps (repeat)", "--step", check=_steps, panel=HUB)
    max_n: int | None = setting(None, "at most N checkpoints, evenly spread (2 or more: the first and the "
                                "last are always kept)", "--max", check=_max_n, panel=HUB)
    stages: Sequence[str] = setting([], "training stages to keep (multi-stage histories; repeat)", "--stage",
                                    panel=HUB)

    def series_args(self) -> dict[str, Any]:
        """As sources.open_series / open_all take them (nothing given: None). Raises nothing on purpose."""
        return dict(preset=self.preset, pattern=self.pattern, tokens_per_step=self.tokens_per_step,
                    every=self.every, steps=list(self.steps) or None, max_n=self.max_n,
                    stages=list(self.stages) or None)


@dataclass
class HubAccess(Settings):
    """How hub checkpoints are reached and kept: token, endpoint, download cache, whether to keep
    each checkpoint after scoring, and the tokenizer for Megatron histories and revisions uploaded
    without one. Raises OutputError (a cache path that is a file)."""

    token: str | None = setting(None, "hub token for gated or private repos", "--token", envvar="HF_TOKEN",
                                panel=HUB)
    endpoint: str | None = setting(None, "hub endpoint", "--endpoint", envvar="HF_ENDPOINT", hidden=True)
    cache_dir: Any = setting(None, "hub cache (default: HF_HUB_CACHE)", "--cache-dir", check=_folder_or_new,
                             panel=HUB)
    keep: bool = setting(False, "keep each checkpoint in the hub cache after scoring", "--keep/--no-keep",
                         panel=HUB)
    tokenizer: str | None = setting(None, "tokenizer repo or folder: for Megatron histories, and revisions "
                                    "uploaded without one", "--tokenizer", panel=HUB)

    def fetcher(self) -> Any:
        """The sources.HubFetcher that downloads with these. Raises nothing on purpose (a download's
        errors come when it fetches)."""
        from .sources._fetch import HubFetcher
        return HubFetcher(self.cache_dir, token=self.token, endpoint=self.endpoint, keep=self.keep,
                          tokenizer=self.tokenizer)
