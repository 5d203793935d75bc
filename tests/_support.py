"""Helpers the tests import: tiny checkpoints and tokenizers, the scores a cube stores computed in
process, figure checks, and folders built once per test run (the demo's trained series kept between
runs). tests/conftest.py holds the fixtures and hooks; this module holds no fixture."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import traceback
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from _models import tiny_model


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
    ids = calibration_tokens(dataset, tok, n=n, seq_len=seq_len, seed=0, text_field=text_field).tokens
    return Scorer(model, [metric]).score(ids, batch_size=n)[..., 0].transpose(1, 2, 0)


def whole_figure(path: Path) -> bool:
    """A PNG from its signature to its IEND chunk, or a PDF from its header to its %%EOF marker."""
    data = path.read_bytes()
    if path.suffix == ".png":
        return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    return path.suffix == ".pdf" and data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")


def run_folder(tmp_path_factory) -> Path:
    """The test run's temporary folder: under pytest-xdist, the one that holds every worker's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The run's folder `name`, made by `build(folder)` once for the whole run: under pytest-xdist the
    first worker to ask builds it while the other waits on a file lock, then reuses it (never builds it
    twice). A build that failed is not tried again by the other worker: it fails with the first error."""
    from filelock import FileLock

    root = run_folder(tmp_path_factory)
    folder, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if failed.exists():
            pytest.fail(f"building {name} failed in another worker:\n{failed.read_text()}")
        if not done.exists():
            try:
                build(folder)
            except BaseException:
                failed.write_text(traceback.format_exc())
                raise
            done.touch()
    return folder


# What builtin:tiny's training reads besides its recipe (which keys its folder): the code, the texts and
# tokenizer it trains on, the libraries. Trained from the same of all these, a series is the same series
# (tests/test_builtin_series.py: deterministic), so the tests keep the demo's trained series between runs
# in a folder named by their digest, and train again whenever any of them changes. What is read is what
# counts: the code's syntax tree without docstrings, the YAML's data, so that an edited comment or
# docstring does not cost a clean machine (CI) the minutes of training again.
REPO = Path(__file__).resolve().parent.parent
TRAINING_INPUTS = ("redundancy/sources/_tiny.py", "redundancy/sources/_task.py",
                   "redundancy/sources/_suites.py", "redundancy/calibration/_corpora.py",
                   "redundancy/data/builtin_tiny.yaml", "redundancy/data/suites.yaml")


def _meaning(path: Path) -> str:
    """What a training input says, without its layout: a Python file's syntax tree less docstrings and
    comments (ast.dump), a YAML file's data (JSON, keys sorted)."""
    import ast

    text = path.read_text()
    if path.suffix == ".yaml":
        import yaml

        return json.dumps(yaml.safe_load(text), sort_keys=True)
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def trained_series_cache() -> Path:
    """$REDUNDANCY_TEST_CACHE (default ~/.cache/redundancy-tests)/trained-DIGEST: the builtin:tiny
    series the demo trains (its recipe and tiny-seeds'), as trained by these inputs and libraries."""
    import sys

    import tokenizers
    import transformers

    digest = hashlib.sha256()
    for rel in TRAINING_INPUTS:
        digest.update(rel.encode() + b"\0" + _meaning(REPO / rel).encode() + b"\0")
    digest.update(f"{sys.version}|{torch.__version__}|{transformers.__version__}|{tokenizers.__version__}"
                  .encode())
    root = Path(os.environ.get("REDUNDANCY_TEST_CACHE") or Path.home() / ".cache" / "redundancy-tests")
    return root / f"trained-{digest.hexdigest()[:16]}"


def seed_trained_series(cache: Path) -> None:
    """Put the demo's trained series into the fresh cache root `cache`: trained into
    trained_series_cache() first where it is not there yet (builtin:tiny's own lock: a second process
    waits for the first), then copied (the run's cache is its own: digests, packing)."""
    import shutil

    from redundancy.sources._suites import SUITES, builtin_suite
    from redundancy.sources._tiny import build_tiny_series

    with pytest.MonkeyPatch.context() as mp:  # the demo's own calls, with the kept cache as root
        mp.setenv("REDUNDANCY_CACHE", str(trained_series_cache()))
        folders = [build_tiny_series()] + [Path(s.checkpoints[0].path).parent
                                           for s in builtin_suite(SUITES.get("tiny-seeds"))]
    for folder in folders:
        shutil.copytree(folder, cache / folder.name)


def cli_here(*args) -> subprocess.CompletedProcess:
    """`redundancy ARGS` run in this process (typer's runner, stderr apart): its exit code, stdout and
    stderr, an exception that escaped the command put on stderr as the traceback the script would print."""

    from typer.testing import CliRunner

    from redundancy.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(r.exception))
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, err)
