"""Options shared by several commands, declared once, each with its check.

A check is an option callback: it runs while the command line is parsed, before any work, and
refuses a value with a RedundancyError naming the option and the value (the app prints it as one
line, exit code 1). Names are checked against the library's own lists, with "did you mean".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional

import typer

from ..errors import OutputError, RedundancyError

HUB = "Hub histories (hub:ORG/NAME and hub suites)"

EXECUTORS = ("local", "ray")
STRATEGIES = ("one-shot", "iterative")


# ---- checks (option callbacks) -------------------------------------------------------------------

def _flag(param: typer.CallbackParam) -> str:
    """How the user wrote the option: its long name (--out rather than -o), or an argument's name."""
    if getattr(param, "param_type_name", "") == "argument" or not param.opts:
        return (param.name or "value").upper()
    return max(param.opts, key=len)


def _each(value: Any) -> list:
    """The values of a one-value or repeated option; none when not given."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def at_least(minimum: int) -> Callable:
    """A count: an integer >= minimum (repeated options: each one). Raises RedundancyError."""
    def check(param: typer.CallbackParam, value: Any) -> Any:
        for v in _each(value):
            if v < minimum:
                raise RedundancyError(f"{_flag(param)} {v}: must be at least {minimum}")
        return value
    return check


def one_of(kind: str, names: Callable[[], Iterable[str]]) -> Callable:
    """A name from `names()` (read from the library when the command runs, so --help stays
    instant); an unknown one is refused with the closest name. Raises NotFoundError."""
    def check(param: typer.CallbackParam, value: Any) -> Any:
        from .._registry import check_name

        known = list(names())
        for v in _each(value):
            try:
                check_name(kind, v, known)
            except RedundancyError as exc:
                raise type(exc)(f"{_flag(param)}: {exc}") from None
        return value
    return check


def _tokens_per_step(value: Optional[float]) -> Optional[float]:
    from ..sources._presets import check_tokens_per_step

    return check_tokens_per_step(value)


def _pattern(value: Optional[str]) -> Optional[str]:
    from ..sources._presets import check_pattern

    return None if value is None else check_pattern(value)


def _every(value: Optional[str]) -> Optional[str]:
    """A token count above 0 ('500B'), as the library reads it; kept as written. Raises SeriesError."""
    from ..sources._select import grid_spacing

    if value is not None:
        grid_spacing(value)
    return value


def _max_n(value: Optional[int]) -> Optional[int]:
    from ..sources._select import check_max_n

    return check_max_n(value)


def resolve_out(value: Optional[Path]) -> Optional[Path]:
    """An output path, a symlink followed once, here: every writer then works on the folder the link
    names (its atomic renames happen beside the target, and a link to an empty folder or to a
    complete store behaves as that folder). Raises OutputError for a link that cannot be followed."""
    if value is None or not value.is_symlink():
        return value
    try:
        return value.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise OutputError(f"--out {value}: cannot follow the symlink ({exc}); point it at a folder") from None


def cube_location(value: Optional[str]) -> "Optional[Path | str]":
    """A cube's location: an object-store URL (s3://bucket/cube.zarr: kept as it is) or a local path
    (a symlink followed once, as for every --out)."""
    from ..cube._backend import is_url

    if value is None or is_url(value):
        return value
    return resolve_out(Path(value))


def cube(help: str, default: Any = ..., *names: str) -> Any:
    """A cube store option (or, without names, argument): a folder or an object-store URL."""
    if not names:
        return typer.Argument(default, help=help, callback=cube_location)
    return typer.Option(default, *names, help=help, callback=cube_location)


def existing(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """An input folder (or file) that exists. Raises SeriesError."""
    from ..errors import SeriesError

    if value is not None and not value.exists():
        raise SeriesError(f"{_flag(param)} {value}: does not exist")
    return value


def _folder_or_new(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """A folder to use or create, not an existing file. Raises OutputError."""
    if value is not None and value.exists() and not value.is_dir():
        raise OutputError(f"{_flag(param)} {value}: is a file, not a folder")
    return value


def _tasks(value: List[str]) -> List[str]:
    """lm-eval task names it knows (its index is built once, ~10 s); the built-in tasks.
    Raises NotFoundError with the closest names."""
    from ..study.evaluate import _check_known, _local_config, _task_manager

    if names := [t for t in value or [] if _local_config(t) is None]:
        _check_known(names, _task_manager(True))
    return value


def _dtypes() -> list[str]:
    from ..pipeline.settings import DTYPES
    return list(DTYPES)


def _metrics() -> list[str]:
    from ..scoring import METRICS
    return METRICS.names()


def _presets() -> list[str]:
    from ..sources import PRESETS
    return PRESETS.names()


def modules() -> tuple[str, ...]:
    from ..families import MODULES
    return MODULES


def kinds() -> list[str]:
    """What a drop plan removes (drop.PLAN_KINDS): attn, mlp, block (layers) or joint."""
    from ..drop._plan import PLAN_KINDS
    return PLAN_KINDS.names()


def quant_methods() -> list[str]:
    """The quantization methods (study.quantize.QUANTIZERS)."""
    from ..study.quantize import QUANTIZERS
    return QUANTIZERS.names()


def eval_presets() -> list[str]:
    """The evaluation presets (study.evaluate.EVAL_PRESETS, from data/tasks/presets.yaml), and '' for none."""
    from ..study.evaluate import EVAL_PRESETS
    return ["", *EVAL_PRESETS.names()]


# ---- options -------------------------------------------------------------------------------------

def out(help: str, default: Any = ..., short: bool = True) -> Any:
    """--out (and -o), its symlink followed once (resolve_out)."""
    names = ("--out", "-o") if short else ("--out",)
    return typer.Option(default, *names, help=help, callback=resolve_out)


def count(default: Any, help: str | None = None, minimum: int = 1) -> Any:
    """An integer option that must be at least `minimum`."""
    return typer.Option(default, help=help, callback=at_least(minimum))


def dtype(default: str) -> Any:
    return typer.Option(default, help="float32, bfloat16 or float16", callback=one_of("dtype", _dtypes))


def metric(default: str, help: str = "metric variable", *names: str) -> Any:
    return typer.Option(default, *names, help=help, callback=one_of("metric", _metrics))


DATASETS_HELP = ("calibration set: a name (`redundancy datasets`), a file or folder "
                 "(.jsonl .json .parquet .csv .txt), or hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]; "
                 "repeat for several")
TEXT_FIELD = typer.Option("text", help="the field holding the text in files and hub rows")
METRICS = typer.Option([], "--metric", help="metrics to store (repeat); default: importance, "
                       "importance_no_residual, angular_distance, relative_magnitude; exact ablation: "
                       "loss_delta, kl; first-order estimate: loss_delta_grad",
                       callback=one_of("metric", _metrics))
SEED = typer.Option(0, help="seed choosing the windows (0 or more)", callback=at_least(0))
DEVICE = typer.Option("cpu", help="cpu, cuda, cuda:1, ...")
LAYERWISE = typer.Option(False, help="one decoder layer on the device at a time "
                         "(models larger than the device)")
EXECUTOR = typer.Option("local", help="local (this process) or ray (a task per checkpoint)",
                        callback=one_of("executor", lambda: EXECUTORS))
WORKERS = typer.Option(None, help="with --executor ray: checkpoints scored at once (default: as many as the "
                       "CPUs or GPUs allow)", callback=at_least(1))
OVERWRITE = typer.Option(False, help="replace an existing non-empty --out")
CHECKPOINT = "a Hugging Face checkpoint folder"
TASKS = typer.Option([], "--task", help="more lm-eval task names (repeat)", callback=_tasks)

NAMES = "Step names (hub histories and local:DIR folders)"

# local:DIR takes these three too: how its folder names read (sources/_steps.py)
PRESET = typer.Option(None, help="a name from `redundancy list --help`'s presets: pythia, olmo, olmo2, "
                      "olmo3, smollm3, map-neo, tinyllama, ...; for local:DIR, how folder names read",
                      rich_help_panel=NAMES, callback=one_of("series preset", _presets))
STAGE = typer.Option([], "--stage", help="training stages to keep (multi-stage histories; repeat)",
                     rich_help_panel=HUB)
PATTERN = typer.Option(None, help="regex with (?P<step>...) (and maybe (?P<tokens>...), (?P<stage>...)) "
                       "for branch or folder names no preset knows", rich_help_panel=NAMES,
                       callback=_pattern)
TPS = typer.Option(None, "--tokens-per-step", help="tokens per step when names do not say (above 0)",
                   rich_help_panel=NAMES, callback=_tokens_per_step)
EVERY = typer.Option(None, help="token grid, e.g. 500B: the checkpoint nearest each point",
                     rich_help_panel=HUB, callback=_every)
STEPS = typer.Option([], "--step", help="exact steps (repeat)", rich_help_panel=HUB, callback=at_least(0))
MAXN = typer.Option(None, "--max", help="at most N checkpoints, evenly spread (2 or more: the first and "
                    "the last are always kept)", rich_help_panel=HUB, callback=_max_n)
TOKEN = typer.Option(None, envvar="HF_TOKEN", help="hub token for gated or private repos",
                     rich_help_panel=HUB)
ENDPOINT = typer.Option(None, envvar="HF_ENDPOINT", hidden=True)
CACHE_DIR = typer.Option(None, help="hub cache (default: HF_HUB_CACHE)", rich_help_panel=HUB,
                         callback=_folder_or_new)
KEEP = typer.Option(False, help="keep each checkpoint in the hub cache after scoring",
                    rich_help_panel=HUB)
TOKENIZER = typer.Option(None, help="tokenizer repo or folder: for Megatron histories, and revisions "
                         "uploaded without one", rich_help_panel=HUB)


def hub_args(preset: Optional[str], pattern: Optional[str], tokens_per_step: Optional[float],
             every: Optional[str], steps: List[int], max_n: Optional[int], token: Optional[str],
             endpoint: Optional[str], stages: List[str]) -> dict[str, Any]:
    """The selection options of a hub history, as sources.open_series takes them (a local folder
    takes preset, pattern and tokens_per_step only: the others are refused there)."""
    return dict(preset=preset, pattern=pattern, tokens_per_step=tokens_per_step, every=every,
                steps=steps or None, max_n=max_n, token=token, endpoint=endpoint, stages=stages or None)
