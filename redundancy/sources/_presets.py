"""Series presets: how a published history names its checkpoints (data/series_presets.yaml)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .._data import load_yaml
from .._registry import Registry
from ..errors import SeriesError


@dataclass(frozen=True)
class Preset:
    """Where a repo keeps its checkpoints and how to read step and tokens from a name."""

    name: str
    exposed: str  # "branches" or "folders"
    pattern: str  # regex with group `step`, optional group `tokens`
    tokens_per_step: float | None = None
    tokens_unit: float = 1.0
    format: str = "hf"  # "hf" or "megatron"

    def parse(self, name: str) -> tuple[int, float | None] | None:
        """(step, tokens) for a matching name, else None."""
        m = re.match(self.pattern, name)
        if not m:
            return None
        step = int(m.group("step"))
        if "tokens" in m.groupdict() and m.group("tokens") is not None:
            return step, float(m.group("tokens")) * self.tokens_unit
        return step, None if self.tokens_per_step is None else step * self.tokens_per_step


def _load() -> Registry[Preset]:
    reg: Registry[Preset] = Registry("series preset")
    for name, spec in load_yaml("series_presets.yaml").items():
        tps = spec.get("tokens_per_step")  # YAML reads 3.5e9 as a string: cast
        reg.register(name, Preset(name, spec["exposed"], spec["pattern"], None if tps is None else float(tps),
                                  float(spec.get("tokens_unit", 1.0)), spec.get("format", "hf")))
    return reg


PRESETS = _load()


def make_preset(preset: str | None, pattern: str | None, tokens_per_step: float | None,
                exposed: str = "branches") -> Preset:
    """A registered preset, or a generic one from a pattern; overrides apply to either."""
    if preset is None and pattern is None:
        raise SeriesError(f"give --preset ({', '.join(PRESETS.names())}) or --pattern with a (?P<step>...) group")
    base = PRESETS.get(preset) if preset else Preset("custom", exposed, pattern or "")
    if "(?P<step>" not in (pattern or base.pattern):
        raise SeriesError(f"pattern {pattern!r} has no (?P<step>\\d+) group to read the step from")
    return Preset(base.name, base.exposed, pattern or base.pattern,
                  tokens_per_step if tokens_per_step is not None else base.tokens_per_step,
                  base.tokens_unit, base.format)


_UNITS = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_tokens(text: str) -> float:
    """'500B' -> 5e11, '2.5T' -> 2.5e12, '1000000' -> 1e6."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMBGT]?)\s*", text.upper())
    if not m:
        raise SeriesError(f"cannot read a token count from {text!r}; write e.g. 500B, 2.5T or 1000000")
    return float(m.group(1)) * _UNITS[m.group(2)]
