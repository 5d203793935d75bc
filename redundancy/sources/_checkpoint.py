"""The typed objects a series is made of."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Checkpoint:
    """One training step of a series: where its weights are and how far training had got."""

    step: int
    tokens: float | None = None  # tokens seen so far; None when the source does not say
    path: Path | None = None  # a local folder loadable by transformers
    revision: str | None = None  # branch, folder or tag name at the source
    commit: str | None = None  # commit sha where the source has one
    weight_hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """A model's checkpoint history. `model` names it in the cube."""

    model: str
    checkpoints: list[Checkpoint]
