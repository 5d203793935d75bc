"""Suites: several training runs (seeds) of one architecture, scored into one cube
(redundancy/data/suites.yaml).

Each member is a series of its own (a `model` in the cube) carrying `suite`, `seed` and `seed_kind`,
which the cube keeps as coordinates along `model`. Built-in suites train builtin:tiny's recipe with
other seeds (cached like builtin:tiny); hub suites list each member's repo with the suite's preset.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .._data import load_yaml
from .._registry import Registry
from ..errors import SeriesError
from ._checkpoint import Series

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Member:
    """One run of a suite: a hub repo with its seed."""

    repo: str
    seed: int
    seed_kind: str = "seed"


@dataclass(frozen=True)
class Suite:
    """A hub suite (`members`, listed with `preset`) or a built-in one (`builtin` trained at `seeds`)."""

    name: str
    members: tuple[Member, ...] = ()
    preset: str | None = None
    builtin: str | None = None
    seeds: tuple[int, ...] = ()
    seed_kind: str = "seed"
    recipe: dict[str, Any] = field(default_factory=dict)  # overrides of the built-in recipe


def _load() -> Registry[Suite]:
    reg: Registry[Suite] = Registry("suite")
    for name, spec in load_yaml("suites.yaml").items():
        members = tuple(Member(**m) for m in spec.get("members", []))
        reg.register(name, Suite(name, members=members, preset=spec.get("preset"),
                                 builtin=spec.get("builtin"), seeds=tuple(spec.get("seeds", ())),
                                 seed_kind=spec.get("seed_kind", "seed"), recipe=spec.get("recipe", {})))
    return reg


SUITES = _load()


def suite_from(spec: str, preset: str | None = None) -> Suite:
    """A registered suite name, or repos joined by commas (seeds 0, 1, ... in that order) with `preset`."""
    if "/" not in spec:
        return SUITES.get(spec)
    if preset is None:
        raise SeriesError("a suite given as repos needs --preset (how each repo names its steps)")
    repos = [r.strip() for r in spec.split(",") if r.strip()]
    return Suite("custom", tuple(Member(r, i) for i, r in enumerate(repos)), preset)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def builtin_suite(suite: Suite, *, progress: Progress | None = None) -> list[Series]:
    """Train (once, cached) and open every seed of a built-in suite."""
    from ._local import local_checkpoints
    from ._tiny import build_tiny_series, default_recipe

    out = []
    for seed in suite.seeds:
        recipe = _merge(default_recipe(), {**suite.recipe, "seed": seed})
        folder = build_tiny_series(recipe, progress=progress)
        out.append(Series(f"builtin:{suite.builtin}-seed{seed}", local_checkpoints(folder), suite=suite.name,
                          seed=seed, seed_kind=suite.seed_kind))
    return out


def hub_suite(suite: Suite, **hub_args: Any) -> list[Series]:
    """The selected checkpoints of every member of a hub suite (nothing downloaded)."""
    from ._crawl import hub_series

    if suite.builtin:
        raise SeriesError(f"suite {suite.name} is built in: score it with "
                          f"`redundancy score suite:{suite.name}`")
    return [replace(hub_series(m.repo, preset=suite.preset, **hub_args), suite=suite.name, seed=m.seed,
                    seed_kind=m.seed_kind) for m in suite.members]
