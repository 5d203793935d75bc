"""Packing as in the study: documents joined with EOS, cut into windows of seq_len, n chosen by seed."""
from __future__ import annotations

import hashlib
from itertools import islice
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .._config import eos_ids
from ..errors import CalibrationError

POOL_FACTOR = 4  # windows are drawn from the first POOL_FACTOR * n windows of the stream
PACKING = "documents joined with EOS, windows without overlap, no BOS"
_DOCS_PER_CALL = 64


def _token_stream(docs: Iterable[str], tokenizer: Any) -> Iterator[list[int]]:
    """Each document's ids, then the tokenizer's eos. One id even where the model's config lists
    several (Llama-3: end_of_text, eom, eot): the separator is the tokenizer's own eos_token (its
    first id if a tokenizer gives a list); none without one. Raises RedundancyError for an eos id
    that is not an id."""
    eos = list(eos_ids(None, tokenizer=tokenizer)[:1])
    it = iter(docs)
    while chunk := list(islice(it, _DOCS_PER_CALL)):
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            yield ids + eos


def _stream_windows(docs: Iterable[str], tokenizer: Any, max_windows: int, seq_len: int) -> np.ndarray:
    """(<= max_windows, seq_len): the token stream cut into consecutive windows, stopping once
    max_windows are full (a set too small gives fewer)."""
    want = max_windows * seq_len
    buf: list[int] = []
    for ids in _token_stream(docs, tokenizer):
        buf.extend(ids)
        if len(buf) >= want:
            break
    n_windows = min(len(buf) // seq_len, max_windows)
    return np.asarray(buf[:n_windows * seq_len], dtype=np.int64).reshape(n_windows, seq_len)


def pack(docs: Iterable[str], tokenizer: Any, n: int, seq_len: int, seed: int,
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


def pack_heldout(docs: Iterable[str], tokenizer: Any, n: int, seq_len: int, after: int,
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
