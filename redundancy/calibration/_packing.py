"""Packing as in the study: documents joined with EOS, cut into windows of seq_len, n chosen by seed.

Streamed: documents are pulled one at a time and tokenized a bounded number of characters at a time
(long ones in pieces, see _pieces.py) until the pool of POOL_FACTOR * n windows is full; nothing
after it is read. What packing holds is the pool's ids plus one call's encodings, whatever the
set's size.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .._config import eos_ids
from ..errors import CalibrationError
from . import _pieces
from ._pieces import Document, document_pieces

POOL_FACTOR = 4  # windows are drawn from the first POOL_FACTOR * n windows of the stream
PACKING = "documents joined with EOS, windows without overlap, no BOS"
_DOCS_PER_CALL = 64


def _tagged_pieces(docs: Iterable[Document]) -> Iterator[tuple[str, bool]]:
    """(piece, is the document's last) for each piece of each document, pulled one at a time."""
    for doc in docs:
        it = document_pieces(doc)
        piece = next(it, None)
        for following in it:
            yield piece, False
            piece = following
        if piece is not None:
            yield piece, True


def _token_stream(docs: Iterable[Document], tokenizer: Any) -> Iterator[np.ndarray]:
    """Each piece's ids (int64), the tokenizer's eos after a document's last piece. One id even where
    the model's config lists several (Llama-3: end_of_text, eom, eot): the separator is the
    tokenizer's own eos_token (its first id if a tokenizer gives a list); none without one. Pieces
    are tokenized _DOCS_PER_CALL or PIECE_CHARS characters at a time (what a call holds is
    bounded) and documents pulled only as those calls need them. Raises RedundancyError for an eos
    id that is not an id."""
    eos = list(eos_ids(None, tokenizer=tokenizer)[:1])
    batch: list[tuple[str, bool]] = []
    chars, budget = 0, _pieces.PIECE_CHARS  # what one call holds (its encodings: see _pieces.py)
    for piece, last in _tagged_pieces(docs):
        if len(batch) >= _DOCS_PER_CALL or chars + len(piece) > budget:
            yield from _encode(batch, tokenizer, eos)
            batch, chars = [], 0
        batch.append((piece, last))
        chars += len(piece)
    yield from _encode(batch, tokenizer, eos)


def _encode(batch: list[tuple[str, bool]], tokenizer: Any, eos: list[int]) -> Iterator[np.ndarray]:
    """The ids of each (piece, last) of `batch`, with eos after a last piece."""
    if not batch:
        return
    encoded = tokenizer([p for p, _ in batch], add_special_tokens=False)["input_ids"]
    for ids, (_, last) in zip(encoded, batch):
        yield np.asarray(ids + eos if last else ids, dtype=np.int64)


def _stream_windows(docs: Iterable[Document], tokenizer: Any, max_windows: int, seq_len: int) -> np.ndarray:
    """(<= max_windows, seq_len): the token stream cut into consecutive windows, stopping once
    max_windows are full (a set too small gives fewer). Documents and pieces are pulled at most two
    beyond the tokenizer call that fills the pool (one ends the call, one says whether the one before
    was a document's last); none after."""
    want = max_windows * seq_len
    parts: list[np.ndarray] = []
    have = 0
    for ids in _token_stream(docs, tokenizer):
        parts.append(ids)
        have += len(ids)
        if have >= want:
            break
    n_windows = min(have // seq_len, max_windows)
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return stream[:n_windows * seq_len].reshape(n_windows, seq_len).copy()


def pack(docs: Iterable[Document], tokenizer: Any, *, n: int, seq_len: int, seed: int,
         set_name: str = "set") -> torch.Tensor:
    """-> (n, seq_len) int64 token windows, n of the stream's first POOL_FACTOR * n windows, chosen by
    seed. Raises CalibrationError when the set is too small."""
    windows = _stream_windows(docs, tokenizer, POOL_FACTOR * n, seq_len)
    if len(windows) < n:
        raise CalibrationError(
            f"calibration set {set_name!r} gives only {len(windows)} windows of {seq_len} tokens with this "
            f"tokenizer; ask for at most {len(windows)} samples or a shorter --seq-len")
    chosen = np.sort(np.random.default_rng(seed).choice(len(windows), size=n, replace=False))
    return torch.from_numpy(windows[chosen])


def pool_tokens(n: int, seq_len: int) -> int:
    """How far into a set's token stream `pack(n, seq_len)` may read: its windows all lie before."""
    return POOL_FACTOR * n * seq_len


def pack_heldout(docs: Iterable[Document], tokenizer: Any, *, n: int, seq_len: int, after: int,
                 set_name: str = "set") -> torch.Tensor:
    """-> (n, seq_len): the first n windows starting at or after token `after` of the stream (give
    pool_tokens of the scoring settings), so they share no token position with any scoring window,
    whatever its seed."""
    skip = -(-after // seq_len)  # windows of this seq_len that overlap the first `after` tokens
    windows = _stream_windows(docs, tokenizer, skip + n, seq_len)
    if len(windows) < skip + n:
        raise CalibrationError(
            f"calibration set {set_name!r} has {max(len(windows) - skip, 0)} windows of {seq_len} tokens "
            f"after the scoring windows; ask for at most that many held-out samples")
    return torch.from_numpy(windows[skip:])


def fingerprint(tokens: torch.Tensor) -> str:
    """sha256 of the token ids (int64, row-major) and their shape; 16 hex digits."""
    h = hashlib.sha256(str(tuple(tokens.shape)).encode())
    h.update(tokens.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
