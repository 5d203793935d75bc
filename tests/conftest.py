"""Shared fixtures: a local series of tiny random checkpoints with a locally trained tokenizer."""
from __future__ import annotations

import functools
import json
import os
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from _models import tiny_model

# No test reaches the real hub: hub tests point the client at tests/_fakehub.py. This variable is
# set after huggingface_hub was imported (via _models), so it reaches subprocesses and our own
# offline checks (calibration), not the already-imported client's constants.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tokenizer(vocab_size: int = 300):
    from redundancy.calibration._corpora import math_problems, stdlib_docstrings
    from redundancy.sources._tiny import _train_tokenizer

    docs = list(islice(stdlib_docstrings(), 20)) + list(islice(math_problems(), 50))
    return _train_tokenizer({"all": docs}, vocab_size)


@functools.lru_cache(maxsize=None)
def shared_tokenizer(vocab_size: int = 300):
    """One trained tokenizer per session, for fixtures that only save it next to many checkpoints
    (training one per checkpoint costs seconds); tests that use a tokenizer get make_tokenizer's."""
    return make_tokenizer(vocab_size)


def write_series(root: Path, steps: list[int], family: str = "llama", **kw) -> Path:
    """root/step-N/ for each step: a tiny random model (seeded by N) with tokenizer and checkpoint.json."""
    tok = make_tokenizer()
    for step in steps:
        model = tiny_model(family, seed=step, vocab=512, **kw)
        folder = root / f"step-{step}"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": step * 4096}))
    return root


def stored_scores(model, tokenizer=None, dataset: str = "math", n: int = 4, seq_len: int = 32,
                  metric: str = "importance", text_field: str = "text") -> np.ndarray:
    """The METRIC `redundancy score -d DATASET --samples N --seq-len SEQ_LEN` stores for a checkpoint
    (fp32, seed 0), computed here: `model` a checkpoint folder (whose tokenizer is used unless
    `tokenizer`, a folder, is given) or a model. (layer, module, sample): a cube cell's order once model,
    step and dataset are selected."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redundancy import Scorer, calibration_tokens

    tok = AutoTokenizer.from_pretrained(tokenizer or model)
    if isinstance(model, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    ids = calibration_tokens(dataset, tok, n, seq_len, seed=0, text_field=text_field).tokens
    return Scorer(model, [metric]).score(ids, batch_size=n)[..., 0].transpose(1, 2, 0)


def whole_figure(path: Path) -> bool:
    """A PNG from its signature to its IEND chunk, or a PDF from its header to its %%EOF marker."""
    data = path.read_bytes()
    if path.suffix == ".png":
        return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    return path.suffix == ".pdf" and data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")


@pytest.fixture(scope="session")
def local_series(tmp_path_factory) -> Path:
    return write_series(tmp_path_factory.mktemp("series"), [0, 10, 100, 1000])


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """`redundancy demo` run once for the session, training builtin:tiny in a fresh cache."""
    from typer.testing import CliRunner

    from redundancy.cli import app

    root = tmp_path_factory.mktemp("demo")
    os.environ["REDUNDANCY_CACHE"] = str(root / "cache")  # this session trains its own series
    result = CliRunner().invoke(app, ["demo", "--out", str(root / "demo")])
    assert result.exit_code == 0, result.output
    (root / "demo" / "output.txt").write_text(result.output)
    return root / "demo"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """For hub tests: fresh redundancy and hub caches, online (the client talks to tests/_fakehub.py)."""
    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "rcache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path
