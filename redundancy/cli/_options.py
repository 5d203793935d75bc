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
from ..settings import HubAccess, Selection
from ..study.settings import StudySettings

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


def _metrics() -> list[str]:
    from ..scoring import METRICS
    return METRICS.names()


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

def setting(cls: type, name: str, *, preset: str | None = None) -> Any:
    """The option of settings field `name` of `cls` (redundancy/settings.py), as declared there:
    names, help, default (or run preset `preset`'s value) and check (run as the command line is
    parsed, and again when the command builds the settings object)."""
    from .._settings import default_of, option_of, preset_values

    opt = option_of(cls, name)
    default = default_of(cls, name)
    if preset is not None:
        default = preset_values(cls, preset).get(name, default)
    if isinstance(default, dict):  # plan counts: {'attn': [2, 4]} is written attn=2,4
        default = [f"{k}={','.join(map(str, v))}" for k, v in default.items()]
    elif isinstance(default, tuple):
        default = list(default)
    check = None
    if opt.check is not None:  # at parse time too: a command that builds no settings object checks it
        def check(param: typer.CallbackParam, value: Any) -> Any:
            if value is not None or default is not None:
                opt.check(value, _flag(param))
            return value  # as typed: the settings object normalizes it when it is built
    return typer.Option(default, *opt.flags, help=opt.help, rich_help_panel=opt.panel, envvar=opt.envvar,
                        hidden=opt.hidden, callback=check)


def out(help: str, default: Any = ..., short: bool = True) -> Any:
    """--out (and -o), its symlink followed once (resolve_out)."""
    names = ("--out", "-o") if short else ("--out",)
    return typer.Option(default, *names, help=help, callback=resolve_out)


def count(default: Any, help: str | None = None, minimum: int = 1) -> Any:
    """An integer option that must be at least `minimum`."""
    return typer.Option(default, help=help, callback=at_least(minimum))


def metric(default: str, help: str = "metric variable", *names: str) -> Any:
    return typer.Option(default, *names, help=help, callback=one_of("metric", _metrics))


def _executors() -> list[str]:
    from ..pipeline import EXECUTORS
    return EXECUTORS.names()


EXECUTOR = typer.Option("local", help="local (this process) or ray (a task per checkpoint)",
                        callback=one_of("executor", _executors))
WORKERS = typer.Option(None, help="with --executor ray: checkpoints scored at once (default: as many as the "
                       "CPUs or GPUs allow)", callback=at_least(1))
OVERWRITE = typer.Option(False, help="replace an existing non-empty --out")
CHECKPOINT = "a Hugging Face checkpoint folder"
TASKS = setting(StudySettings, "tasks")

# which checkpoints of a history (local:DIR takes the first three: how its folder names read), and
# how the hub is reached: declared in redundancy/settings.py (Selection, HubAccess)
PRESET, PATTERN, TPS = (setting(Selection, n) for n in ("preset", "pattern", "tokens_per_step"))
EVERY, STEPS, MAXN, STAGE = (setting(Selection, n) for n in ("every", "steps", "max_n", "stages"))
TOKEN, ENDPOINT, CACHE_DIR, KEEP, TOKENIZER = (setting(HubAccess, n) for n in
                                               ("token", "endpoint", "cache_dir", "keep", "tokenizer"))


def selection(*, preset: Optional[str], pattern: Optional[str], tokens_per_step: Optional[float],
              every: Optional[str], steps: List[int], max_n: Optional[int], stages: List[str]) -> Selection:
    """The Selection the options above name (checked as it is built)."""
    return Selection(preset=preset, pattern=pattern, tokens_per_step=tokens_per_step, every=every,
                     steps=steps, max_n=max_n, stages=stages)
