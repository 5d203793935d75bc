"""Named calibration sets -> fixed, fingerprinted token tensors (n, seq_len)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from .._data import load_yaml
from .._registry import Registry
from . import _corpora
from ._hub import hub_documents
from ._packing import PACKING, POOL_FACTOR, fingerprint, pack

__all__ = ["CalibrationSet", "Calibration", "CALIBRATION_SETS", "calibration_tokens"]


@dataclass(frozen=True)
class CalibrationSet:
    """A named source of documents."""

    name: str
    description: str
    documents: Callable[[], Iterator[str]]
    offline: bool


@dataclass
class Calibration:
    """Token windows of one set for one tokenizer, with the settings that made them."""

    name: str
    tokens: torch.Tensor  # (n, seq_len) int64
    fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)


CALIBRATION_SETS: Registry[CalibrationSet] = Registry("calibration set")


def _row_text(fields: list[str]) -> Callable[[dict], str]:
    def text(row: dict) -> str:
        parts = [row.get(f) or "" for f in fields]
        return "\n".join("\n".join(map(str, p)) if isinstance(p, list) else str(p) for p in parts)
    return text


def _register_all() -> None:
    spec = load_yaml("calibration_sets.yaml")
    builtin = sorted(k for k, v in spec.items() if "builtin" in v)
    for name, s in spec.items():
        if "builtin" in s:
            docs = getattr(_corpora, s["builtin"])
        else:
            hub = s["hub"]
            docs = (lambda hub=hub, s=s: hub_documents(hub["repo"], hub.get("config"), hub["split"],
                                                       _row_text(s["fields"]), builtin))
        CALIBRATION_SETS.register(name, CalibrationSet(name, s["description"], docs, "builtin" in s))


def _tokenizer_key(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


_PACKED: dict[tuple, torch.Tensor] = {}  # checkpoints of a series share a tokenizer: pack once


def calibration_tokens(name: str, tokenizer: Any, n: int, seq_len: int, seed: int = 0) -> Calibration:
    """Pack set `name` with `tokenizer` into n windows of seq_len tokens (see _packing.pack)."""
    if n < 1 or seq_len < 2:
        raise ValueError(f"need n >= 1 samples and seq_len >= 2 tokens, got n={n}, seq_len={seq_len}")
    cset = CALIBRATION_SETS.get(name)
    key = (name, _tokenizer_key(tokenizer), n, seq_len, seed)
    if key not in _PACKED:
        _PACKED[key] = pack(cset.documents(), tokenizer, n, seq_len, seed, set_name=name)
    tokens = _PACKED[key]
    settings = dict(n_samples=n, seq_len=seq_len, seed=seed, pool_factor=POOL_FACTOR, packing=PACKING)
    return Calibration(name, tokens, fingerprint(tokens), settings)


_register_all()
