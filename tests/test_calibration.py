"""Calibration sets: packing, determinism, fingerprints, clear errors."""
from __future__ import annotations

import pytest
import torch

from redundancy import CALIBRATION_SETS, calibration_tokens
from redundancy.calibration._packing import fingerprint, pack
from redundancy.errors import CalibrationError, NotFoundError

from _support import make_tokenizer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def test_registry_has_hub_and_builtin_sets():
    assert {"c4", "codealpaca", "mathinstruct", "lima", "prose", "code", "math"} <= set(CALIBRATION_SETS)
    with pytest.raises(NotFoundError, match="Did you mean 'code'"):
        CALIBRATION_SETS.get("cod")


def test_packing_joins_with_eos_and_cuts_windows(tok):
    docs = ["one two three", "four five", "six seven eight nine"]
    ids = [tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for d in docs]
    stream = [i for x in ids for i in x]
    seq = 3
    got = pack(docs, tok, n=len(stream) // seq, seq_len=seq, seed=0)
    want = torch.tensor(stream[: (len(stream) // seq) * seq]).reshape(-1, seq)
    assert torch.equal(got, want)  # all windows chosen: they come back in stream order
    with pytest.raises(CalibrationError, match="ask for at most"):
        pack(docs, tok, n=len(stream), seq_len=seq, seed=0)


@pytest.mark.parametrize("name", ["prose", "code", "math"])
def test_builtin_sets_are_deterministic(tok, name):
    a = calibration_tokens(name, tok, n=4, seq_len=64, seed=0)
    from redundancy.calibration import _PACKED
    _PACKED.clear()
    b = calibration_tokens(name, tok, n=4, seq_len=64, seed=0)
    c = calibration_tokens(name, tok, n=4, seq_len=64, seed=1)
    assert a.tokens.shape == (4, 64) and a.tokens.dtype == torch.int64
    assert torch.equal(a.tokens, b.tokens) and a.fingerprint == b.fingerprint == fingerprint(b.tokens)
    assert a.fingerprint != c.fingerprint
    assert a.settings["seq_len"] == 64 and a.settings["n_samples"] == 4


def test_sets_differ(tok):
    prints = {calibration_tokens(n, tok, n=2, seq_len=32).fingerprint for n in ("prose", "code", "math")}
    assert len(prints) == 3


def test_hub_set_offline(tok, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CalibrationError, match="Use an offline set instead: code, math, prose, or a local file"
    ):
        calibration_tokens("lima", tok, n=2, seq_len=32)
