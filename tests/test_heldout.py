"""Evaluation you can trust: perplexity on held-out windows that no scoring run drew, and speedups
read against the spread of their repeated timings."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from redundancy.calibration import calibration_tokens, heldout_tokens
from redundancy.errors import CalibrationError
from redundancy.study.perplexity import perplexity
from redundancy.study.results import open_results, results_table, write_results

from _models import tiny_model
from _support import make_tokenizer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    """A local set of 400 distinct lines, so every window of its stream is unique."""
    path = tmp_path_factory.mktemp("set") / "notes.jsonl"
    lines = [json.dumps({"text": f"Note {i}: the value of item {i * 7 % 113} is {i * i % 97}."})
             for i in range(400)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _stream(tok, path) -> list[int]:
    """The set's token stream built here by hand: each document's ids, then EOS."""
    docs = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    return [i for d in docs for i in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]


def _starts(windows: torch.Tensor, stream: list[int]) -> list[int]:
    """Where in the stream each window begins (each window is found exactly once)."""
    text = np.asarray(stream)
    out = []
    for w in windows.numpy():
        hits = [s for s in range(len(text) - len(w) + 1) if (text[s:s + len(w)] == w).all()]
        assert len(hits) == 1
        out.append(hits[0])
    return out


@pytest.mark.parametrize("held_seq", [32, 48])
def test_heldout_windows_share_no_token_with_any_scoring_seed(tok, notes, held_seq):
    stream = _stream(tok, notes)
    n, seq = 8, 32
    held = heldout_tokens(str(notes), tok, n=6, seq_len=held_seq, scored=(n, seq))
    held_starts = _starts(held.tokens, stream)
    pool = 4 * n * seq  # POOL_FACTOR windows per sample: the furthest any seed's windows reach
    assert min(held_starts) >= pool and held_starts == [held_starts[0] + k * held_seq for k in range(6)]
    for seed in range(5):
        scored = calibration_tokens(str(notes), tok, n=n, seq_len=seq, seed=seed).tokens
        assert max(_starts(scored, stream)) + seq <= min(held_starts)


def test_heldout_too_small_says_how_many(tok, notes):
    with pytest.raises(CalibrationError, match="after the scoring windows; ask for at most"):
        heldout_tokens(str(notes), tok, n=10_000, seq_len=32, scored=(8, 32))


def test_perplexity_equals_transformers_own_loss(tok, notes):
    model = tiny_model("llama", vocab=len(tok)).eval()
    tokens = heldout_tokens(str(notes), tok, n=5, seq_len=32, scored=(8, 32)).tokens
    with torch.no_grad():
        loss = model(input_ids=tokens, labels=tokens).loss  # transformers' mean over every predicted token
    assert perplexity(model, tokens, batch_size=2) == pytest.approx(math.exp(float(loss)), rel=1e-5)


def _timed(store, plan, seconds, kind="attn"):
    speed = {"tokens_per_s": 100 / float(np.median(seconds)), "seconds": float(np.median(seconds)),
             "seconds_each": seconds}
    write_results(store, "m", 0, plan, {"t": 0.6 if plan != "baseline" else 0.7}, speed,
                  kind=kind if plan != "baseline" else None, n_dropped=4 if plan != "baseline" else 0,
                  perplexity={"prose": 12.5 if plan != "baseline" else 10.0})


def test_speedup_within_its_spread_is_noise_and_has_no_gamma(tmp_path):
    store = tmp_path / "r.zarr"
    _timed(store, "baseline", [1.00, 1.10, 1.05])
    _timed(store, "Attn-4", [0.50, 0.55, 0.52])  # clearly faster: 1.00/0.55 .. 1.10/0.50
    _timed(store, "MLP-4", [0.95, 1.12, 1.00], kind="mlp")  # median faster, but 1.00/1.12 < 1 < 1.10/0.95
    row = open_results(store).sel(model="m", step=0)
    assert float(row["speedup_low"].sel(plan="Attn-4")) == pytest.approx(1.00 / 0.55)
    assert float(row["speedup_high"].sel(plan="Attn-4")) == pytest.approx(1.10 / 0.50)
    assert not row["speedup_noise"].sel(plan="Attn-4") and row["speedup_noise"].sel(plan="MLP-4")
    assert float(row["speedup"].sel(plan="MLP-4")) == pytest.approx(1.05 / 1.00)
    assert row["gamma"].sel(plan="MLP-4").isnull()
    # (0.7 - 0.6) / 0.7 = 14.29 % lost, for 1.05 / 0.52 - 1 = 101.9 % gained
    assert float(row["gamma"].sel(plan="Attn-4")) == pytest.approx((100 / 7) / (100 * (1.05 / 0.52 - 1)))
    frame = results_table(open_results(store), "m", 0)
    assert frame.loc["MLP-4", "ppl prose"] == 12.5 and frame.loc["baseline", "ppl prose"] == 10.0


def test_table_prints_noise_and_perplexity(tmp_path):
    from redundancy.cli._table import cells

    store = tmp_path / "r.zarr"
    _timed(store, "baseline", [1.00, 1.10, 1.05])
    _timed(store, "Attn-4", [0.50, 0.55, 0.52])
    _timed(store, "MLP-4", [0.95, 1.12, 1.00], kind="mlp")
    header, rows = cells(results_table(open_results(store), "m", 0))
    cells = {r[0].split()[0]: dict(zip(header, r)) for r in rows}
    assert cells["MLP-4"]["speedup"] == "noise (0.89-1.16)" and cells["MLP-4"]["gamma"] == "-"
    assert cells["Attn-4"]["speedup"] == "2.02 (1.82-2.20)" and cells["Attn-4"]["gamma"] == "0.14"
    assert cells["baseline"]["ppl prose"] == "10.00" and cells["MLP-4"]["ppl prose"] == "12.50"
