"""Packing as in the study: documents joined with EOS, cut into windows of seq_len, n chosen by seed."""
from __future__ import annotations

import hashlib
from itertools import islice
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..errors import CalibrationError

POOL_FACTOR = 4  # windows are drawn from the first POOL_FACTOR * n windows of the stream
PACKING = "documents joined with EOS, windows without overlap, no BOS"
_DOCS_PER_CALL = 64


def _token_stream(docs: Iterable[str], tokenizer: Any) -> Iterator[list[int]]:
    eos = tokenizer.eos_token_id
    it = iter(docs)
    while chunk := list(islice(it, _DOCS_PER_CALL)):
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            yield ids + ([eos] if eos is not None else [])


def pack(docs: Iterable[str], tokenizer: Any, n: int, seq_len: int, seed: int,
         set_name: str = "set") -> torch.Tensor:
    """-> (n, seq_len) int64 token windows. Raises CalibrationError when the set is too small."""
    want = POOL_FACTOR * n * seq_len
    buf: list[int] = []
    for ids in _token_stream(docs, tokenizer):
        buf.extend(ids)
        if len(buf) >= want:
            break
    n_windows = len(buf) // seq_len
    if n_windows < n:
        raise CalibrationError(
            f"calibration set {set_name!r} gives only {n_windows} windows of {seq_len} tokens with this "
            f"tokenizer; ask for at most {n_windows} samples or a shorter --seq-len")
    windows = np.asarray(buf[:n_windows * seq_len], dtype=np.int64).reshape(n_windows, seq_len)
    chosen = np.sort(np.random.default_rng(seed).choice(n_windows, size=n, replace=False))
    return torch.from_numpy(windows[chosen])


def fingerprint(tokens: torch.Tensor) -> str:
    """sha256 of the token ids (int64, row-major) and their shape; 16 hex digits."""
    h = hashlib.sha256(str(tuple(tokens.shape)).encode())
    h.update(tokens.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
