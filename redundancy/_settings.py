"""Each option declared once: a settings dataclass field carries its default, its help text, its
command-line names and its check; a settings object that is built is valid.

    @dataclass
    class ScoreSettings(Settings):
        n_samples: int = setting(32, "calibration windows per set", "--samples", check=at_least(1))

The CLI builds its options from these fields (`redundancy/cli/_options.py`'s `setting`), a named
run preset (`redundancy/data/run_presets.yaml`) replaces defaults by name, and a notebook's
`ScoreSettings(n_samples=0)` is refused with the same one line as `redundancy score --samples 0`.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, TypeVar

from ._registry import check_name
from .errors import NotFoundError, RedundancyError

Check = Callable[[Any, str], Any]  # (value, how the user wrote the option) -> the value, or raises
S = TypeVar("S", bound="Settings")


@dataclass(frozen=True)
class Option:
    """What the command line shows of a settings field: help, names (the long one first), check,
    and the help panel it sits in."""

    help: str
    flags: tuple[str, ...] = ()
    check: Check | None = None
    panel: str | None = None
    envvar: str | None = None  # the command line also reads it from this environment variable
    hidden: bool = False  # not shown in --help

    def label(self, name: str) -> str:
        """How an error names the option: its long flag, else the field's name."""
        return self.flags[0] if self.flags else name


def setting(default: Any, help: str, *flags: str, check: Check | None = None,
            panel: str | None = None, envvar: str | None = None, hidden: bool = False) -> Any:
    """A dataclass field declared with everything the CLI and the checks need. A list, tuple or
    dict default is copied for each object (a default_factory)."""
    meta = {"option": Option(help, flags=flags, check=check, panel=panel, envvar=envvar, hidden=hidden)}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def option_of(cls: type, name: str) -> Option:
    """The Option of field `name` of settings class `cls`. Raises NotFoundError."""
    for f in fields(cls):
        if f.name == name and "option" in f.metadata:
            return f.metadata["option"]
    raise NotFoundError(f"{cls.__name__} has no option {name!r}")


def default_of(cls: type, name: str) -> Any:
    """The declared default of field `name` (a fresh copy for list and dict defaults)."""
    for f in fields(cls):
        if f.name == name:
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    raise NotFoundError(f"{cls.__name__} has no option {name!r}")


class Settings:
    """Base of the settings dataclasses: checks every field with its declared check when built (and
    when `dataclasses.replace` builds a new one). Raises RedundancyError (or a subclass) naming the
    option and the value."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            opt = f.metadata.get("option")
            if opt is not None and opt.check is not None:
                object.__setattr__(self, f.name, opt.check(getattr(self, f.name), opt.label(f.name)))

    @classmethod
    def from_preset(cls: type[S], name: str, **overrides: Any) -> S:
        """The settings of run preset `name` (redundancy/data/run_presets.yaml), with `overrides`.
        Raises NotFoundError (an unknown preset, with the closest name) or the fields' own errors."""
        return cls(**{**preset_values(cls, name), **overrides})


@functools.lru_cache(maxsize=1)
def _run_presets() -> dict[str, Any]:
    from ._data import load_yaml
    return load_yaml("run_presets.yaml")


def preset_values(cls: type, name: str) -> dict[str, Any]:
    """The values run preset `name` sets for settings class `cls` (only the fields it names).
    Raises NotFoundError (an unknown preset), RedundancyError (a preset naming no field of `cls`)."""
    presets = _run_presets()
    check_name("run preset", name, presets)
    values = copy.deepcopy(presets[name].get(cls.__name__, {}))  # the cached YAML stays as read
    known = {f.name for f in fields(cls)}
    if unknown := sorted(set(values) - known):
        raise RedundancyError(f"run preset {name!r} sets {unknown[0]!r}, which {cls.__name__} has not")
    return dict(values)


# ---- checks ----------------------------------------------------------------------------------------

def at_least(minimum: int, *, optional: bool = False) -> Check:
    """A whole number >= minimum (None allowed when `optional`)."""
    def check(value: Any, label: str) -> Any:
        if value is None and optional:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise RedundancyError(f"{label} {value!r}: must be a whole number of at least {minimum}")
        return value
    return check


def one_of(kind: str, names: Callable[[], Iterable[str]], *, many: bool = False,
           optional: bool = False) -> Check:
    """A name from `names()` ("did you mean" on a miss); `many`: a list of them, kept once each in
    order, returned as a tuple."""
    def check(value: Any, label: str) -> Any:
        if value is None and optional:
            return value
        known = list(names())
        values = [value] if not many else (value.split(",") if isinstance(value, str) else list(value))
        for v in values:
            try:
                check_name(kind, v, known)
            except RedundancyError as exc:
                raise type(exc)(f"{label}: {exc}") from None
        return tuple(dict.fromkeys(values)) if many else value
    return check


def mapping(value: Any, label: str) -> dict:
    """A dict (copied), refusing anything else."""
    if not isinstance(value, Mapping):
        raise RedundancyError(f"{label} {value!r}: must be a mapping")
    return dict(value)


def all_of(*checks: Check) -> Check:
    """The checks one after the other, each on what the previous returned."""
    def check(value: Any, label: str) -> Any:
        for c in checks:
            value = c(value, label)
        return value
    return check


def device(value: str, label: str) -> str:
    """A device this machine has (cpu, cuda, cuda:1, mps). Raises RedundancyError naming it."""
    from ._device import check_device

    check_device(value)
    return value


def metric_names() -> list[str]:
    """The registered metrics' names (scoring.METRICS; imported when a check runs)."""
    from .scoring import METRICS
    return METRICS.names()
