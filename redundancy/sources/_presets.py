"""Series presets: how a published history names its checkpoints (redundancy/data/series_presets.yaml)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace

from .._data import load_yaml
from .._registry import Registry
from ..errors import SeriesError

EXPOSED = ("branches", "folders", "repos")


@dataclass(frozen=True)
class Preset:
    """Where a history keeps its checkpoints and how to read step, tokens and stage from a name.

    exposed: "branches" of one repo, top-level "folders" of its main branch, or "repos" (one repo
    per step, found by the hub's model listing of `author`, filtered by `search`, or given as a list).
    pattern: regex with group `step`; optional groups `tokens` (in `tokens_unit`) and `stage`.
    """

    name: str
    exposed: str
    pattern: str
    tokens_per_step: float | None = None
    tokens_unit: float = 1.0
    format: str = "hf"  # "hf" or "megatron"
    step_unit: int = 1  # TinyLlama names say "480k": 1000
    stages: str = "restart"  # multi-stage histories: does each stage count steps from 0 ("restart") or not
    stage_order: tuple[str, ...] = ()  # stage names in training order; others after, in natural order
    author: str | None = None  # exposed: repos
    search: str | None = None

    def parse(self, name: str) -> tuple[int, float | None, str] | None:
        """(step, tokens, stage) for a matching name, else None (SeriesError for a step group that
        captured something other than digits). Tokens rounded in the name (OLMo's
        whole billions) are refined to step x tokens_per_step where the two agree within the rounding."""
        m = re.match(self.pattern, name)
        if not m:
            return None
        groups = m.groupdict()
        if not re.fullmatch(r"[0-9]+", m.group("step") or ""):
            raise SeriesError(f"{name}: the pattern {self.pattern!r} reads the step as "
                              f"{m.group('step')!r}, not a whole number; its (?P<step>...) group should "
                              "match digits: (?P<step>\\d+)")
        step = int(m.group("step")) * self.step_unit
        stage = groups.get("stage") or ""
        by_step = None if self.tokens_per_step is None else step * self.tokens_per_step
        if groups.get("tokens") is None:
            return step, by_step, stage
        named = float(groups["tokens"]) * self.tokens_unit
        rounding = 0.5 * self.tokens_unit * _precision(groups["tokens"])  # half the name's last digit
        if by_step is not None and abs(by_step - named) <= rounding:
            return step, by_step, stage
        return step, named, stage


def _precision(text: str) -> float:
    """The rounding step of a number as written: "4" -> 1, "2.5" -> 0.1."""
    return 10.0 ** -len(text.split(".")[1]) if "." in text else 1.0


def _from_yaml(name: str, spec: dict) -> Preset:
    known = {f.name for f in fields(Preset)}
    if unknown := set(spec) - known - {"repo_example"}:
        raise SeriesError(f"series preset {name}: unknown keys {sorted(unknown)}")
    spec = {k: v for k, v in spec.items() if k in known}
    for key in ("tokens_per_step", "tokens_unit"):  # YAML reads 3.5e9 as a string: cast
        if spec.get(key) is not None:
            spec[key] = float(spec[key])
    spec["stage_order"] = tuple(spec.get("stage_order", ()))
    return Preset(name, **spec)


def _load() -> Registry[Preset]:
    reg: Registry[Preset] = Registry("series preset")
    for name, spec in load_yaml("series_presets.yaml").items():
        reg.register(name, _from_yaml(name, spec))
    return reg


PRESETS = _load()


def make_preset(preset: str | None, pattern: str | None, tokens_per_step: float | None,
                exposed: str = "branches") -> Preset:
    """A registered preset, or a generic one from a pattern; overrides apply to either."""
    if preset is None and pattern is None:
        raise SeriesError(f"give --preset ({', '.join(PRESETS.names())}) or --pattern with a "
                          "(?P<step>...) group")
    if exposed not in EXPOSED:
        raise SeriesError(f"checkpoints are exposed as one of {', '.join(EXPOSED)}, not {exposed!r}")
    base = PRESETS.get(preset) if preset else Preset("custom", exposed, pattern or "")
    check_tokens_per_step(tokens_per_step)
    if pattern is not None:
        check_pattern(pattern)
    return replace(base, pattern=pattern or base.pattern,
                   tokens_per_step=tokens_per_step if tokens_per_step is not None else base.tokens_per_step)


def check_pattern(pattern: str) -> str:
    """A regex with a (?P<step>...) group. Raises SeriesError naming the pattern."""
    try:
        groups = re.compile(pattern).groupindex
    except re.error as exc:
        raise SeriesError(f"--pattern {pattern!r} is not a regular expression ({exc})") from None
    if "step" not in groups:
        raise SeriesError(f"--pattern {pattern!r} has no (?P<step>\\d+) group to read the step from")
    return pattern


def check_tokens_per_step(value: float | None) -> float | None:
    """None, or a finite number of tokens above 0. Raises SeriesError naming the value."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value <= 0):
        raise SeriesError(f"--tokens-per-step {value!r}: must be a finite number of tokens above 0")
    return value


_UNITS = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_tokens(text: str) -> float:
    """'500B' -> 5e11, '2.5T' -> 2.5e12, '1000000' -> 1e6."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMBGT]?)\s*", text.upper())
    if not m:
        raise SeriesError(f"cannot read a token count from {text!r}; write e.g. 500B, 2.5T or 1000000")
    return float(m.group(1)) * _UNITS[m.group(2)]
