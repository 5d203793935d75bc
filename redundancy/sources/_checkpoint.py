"""The typed objects a series is made of."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Checkpoint:
    """One training step of a series: where its weights are and how far training had got."""

    step: int
    tokens: float | None = None  # tokens seen so far; None when the source does not say
    path: Path | None = None  # a local folder loadable by transformers (None until downloaded)
    revision: str | None = None  # branch, folder or tag name at the source
    commit: str | None = None  # commit sha where the source has one
    weight_hashes: dict[str, str] = field(default_factory=dict)  # file -> sha256 (LFS)
    repo: str | None = None  # hub repo id
    subfolder: str | None = None  # for histories kept as folders on one branch (MAP-Neo)
    download_bytes: int = 0  # what scoring needs to download
    format: str = "hf"  # "hf" or "megatron"
    duplicate_of: int | None = None  # step whose weights are byte-identical (scored once)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Checkpoint":
        return cls(**{**d, "path": None if d.get("path") is None else Path(d["path"])})


@dataclass(frozen=True)
class Series:
    """A model's checkpoint history. `model` names it in the cube."""

    model: str
    checkpoints: list[Checkpoint]
