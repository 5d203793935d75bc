"""Calibration sets -> fixed, fingerprinted token tensors (n, seq_len).

A set is named in redundancy/data/calibration_sets.yaml, or given as a local file or folder, or as
`hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]` (see _spec.py).

Every set is read as a stream until the pool of windows is full (_packing.py), long documents in
pieces (_pieces.py): memory is bounded by n_samples x seq_len, not by the set's size (a 1 GB .txt
file packs in the few hundred MB the imports take; benchmarks/calibration_memory.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from .._data import load_yaml
from .._registry import Registry
from . import _corpora
from ._hub import hub_documents
from ._packing import PACKING, POOL_FACTOR, fingerprint, pack, pack_heldout, pool_tokens

__all__ = ["CalibrationSet", "Calibration", "CALIBRATION_SETS", "calibration_tokens", "heldout_tokens",
           "resolve_set"]


@dataclass(frozen=True)
class CalibrationSet:
    """A named source of documents."""

    name: str
    description: str
    documents: Callable[[], Iterator[str]]
    offline: bool
    source: str = ""  # where the documents come from, in full (stored with every cell)


@dataclass
class Calibration:
    """Token windows of one set for one tokenizer, with the settings that made them."""

    name: str
    tokens: torch.Tensor  # (n, seq_len) int64
    fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""


CALIBRATION_SETS: Registry[CalibrationSet] = Registry("calibration set")


def _row_text(fields: list[str]) -> Callable[[dict], str]:
    def text(row: dict) -> str:
        parts = [row.get(f) or "" for f in fields]
        return "\n".join("\n".join(map(str, p)) if isinstance(p, list) else str(p) for p in parts)
    return text


def offline_names() -> list[str]:
    """The registered sets that need no network. Raises nothing on purpose."""
    return sorted(n for n in CALIBRATION_SETS.names() if CALIBRATION_SETS.get(n).offline)


def _hub_set(hub: dict, fields: list[str]) -> Callable[[], Iterator[str]]:
    """The documents of a registered hub set, streamed when packed."""
    def documents() -> Iterator[str]:
        return hub_documents(hub["repo"], config=hub.get("config"), split=hub["split"],
                             to_text=_row_text(fields), builtin=offline_names())
    return documents


def _register_all() -> None:
    for name, s in load_yaml("calibration_sets.yaml").items():
        if "builtin" in s:
            docs, source = getattr(_corpora, s["builtin"]), f"builtin:{s['builtin']}"
        else:
            hub = s["hub"]
            docs = _hub_set(hub, s["fields"])
            source = f"hf:{hub['repo']}:{hub.get('config') or ''}:{hub['split']}:{','.join(s['fields'])}"
        CALIBRATION_SETS.register(name, CalibrationSet(name, description=s["description"], documents=docs,
                                                       offline="builtin" in s, source=source))


def resolve_set(spec: str, *, text_field: str = "text") -> CalibrationSet:
    """A registered name, a local file or folder, or hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]; `text_field`
    is the field read from files and hub rows. Nothing is read but a local path's bytes (for its digest).
    Raises CalibrationError (a malformed hf: spec, a missing or empty file or folder, an unreadable
    file); NotFoundError (an unknown set name, with the closest one)."""
    from ._spec import resolve
    return resolve(spec, text_field=text_field)


def _tokenizer_key(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


_PACKED: dict[tuple, torch.Tensor] = {}  # checkpoints of a series share a tokenizer: pack once
_PACKED_MAX = 16  # (sets x settings) kept; the oldest goes first


def _packed(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    if key not in _PACKED:
        while len(_PACKED) >= _PACKED_MAX:
            _PACKED.pop(next(iter(_PACKED)))
        _PACKED[key] = make()
    return _PACKED[key]


def _resolved(spec: "str | CalibrationSet", text_field: str) -> CalibrationSet:
    """A set resolved already (ScoreSettings.sets(): a folder is listed once per run) or a spec."""
    return spec if isinstance(spec, CalibrationSet) else resolve_set(spec, text_field=text_field)


def _check_counts(n: int, seq_len: int) -> None:
    from ..errors import CalibrationError

    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or isinstance(seq_len, bool) \
            or not isinstance(seq_len, int) or seq_len < 2:
        raise CalibrationError(f"need n >= 1 samples and seq_len >= 2 tokens, got n={n}, seq_len={seq_len}")


def calibration_tokens(spec: "str | CalibrationSet", tokenizer: Any, *, n: int, seq_len: int, seed: int = 0,
                       text_field: str = "text") -> Calibration:
    """Pack set `spec` (a name, a file or folder, hf:..., or a CalibrationSet resolved already) with
    `tokenizer` into n windows of seq_len tokens (see _packing.pack): `tokens` (n, seq_len) int64.
    `text_field` is the field read from files and hub rows.

    Raises CalibrationError (n below 1, seq_len below 2, a set too short for the windows, an
    unreadable file), NotFoundError (an unknown set name)."""
    _check_counts(n, seq_len)
    cset = _resolved(spec, text_field)
    tokens = _packed((cset.source or cset.name, _tokenizer_key(tokenizer), n, seq_len, seed),
                     lambda: pack(cset.documents(), tokenizer, n=n, seq_len=seq_len, seed=seed,
                                          set_name=cset.name))
    settings = dict(n_samples=n, seq_len=seq_len, seed=seed, pool_factor=POOL_FACTOR, packing=PACKING)
    return Calibration(cset.name, tokens, fingerprint=fingerprint(tokens), settings=settings,
                       source=cset.source)


def heldout_tokens(spec: "str | CalibrationSet", tokenizer: Any, *, n: int, seq_len: int,
                   scored: tuple[int, int], text_field: str = "text") -> Calibration:
    """n windows (n, seq_len) of set `spec` that no scoring run with `scored` = (n_samples, seq_len)
    can have drawn, whatever its seed: the windows after its pool (see _packing.pack_heldout).
    Raises what calibration_tokens raises."""
    _check_counts(n, seq_len)
    cset, after = _resolved(spec, text_field), pool_tokens(*scored)
    tokens = _packed(("heldout", cset.source or cset.name, _tokenizer_key(tokenizer), n, seq_len, after),
                     lambda: pack_heldout(cset.documents(), tokenizer, n=n, seq_len=seq_len, after=after,
                                                  set_name=cset.name))
    settings = dict(n_samples=n, seq_len=seq_len, after_token=after, packing=PACKING)
    return Calibration(cset.name, tokens, fingerprint=fingerprint(tokens), settings=settings,
                       source=cset.source)


_register_all()
