"""Issue 23's bars from the user's side: the whole chain from Python alone (settings built and
checked in the library, no CLI import), and `redundancy order hub:ORG/NAME` against the local hub
server (tests/_fakehub.py, answering as the hub does for the real huggingface_hub client)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from typer.testing import CliRunner

from redundancy import open_cube
from redundancy.cli import app

from _fakehub import FakeHub
from _models import tiny_model
from _support import make_tokenizer, seed_trained_series

FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]


def run(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture()
def hub_history(tmp_path) -> Path:
    """A Pythia-named hub history of two steps (branches step0, step4), each a real tiny GPT-NeoX."""
    root, tok = tmp_path / "hub", make_tokenizer(512)
    for i, name in enumerate(["step0", "step4"]):
        folder = root / "org/pythia-tiny" / name
        tiny_model("gpt_neox", seed=i, vocab=512).save_pretrained(folder)
        tok.save_pretrained(folder)
    shutil.copytree(root / "org/pythia-tiny/step4", root / "org/pythia-tiny/main")
    return root


@pytest.mark.slow  # scores and orders twice (hub and local), iterative orders re-score each model
def test_order_on_a_hub_history_equals_the_order_of_its_local_copy(hub_history, env, tmp_path):
    """`order hub:...` fetches the checkpoint as `score` does (then frees it), and stores the same
    one-shot and iterative orders as `order local:` on the same folders."""
    with FakeHub(hub_history) as hub:
        hub_args = ["--preset", "pythia", "--endpoint", hub.endpoint]
        code, out = run("score", "hub:org/pythia-tiny", *hub_args, "--out", tmp_path / "hub.zarr", *FAST)
        assert code == 0, out
        code, out = run("order", "hub:org/pythia-tiny", *hub_args, "--out", tmp_path / "hub.zarr",
                        "-d", "math", "--batch-size", "4", "--step", "4")
        assert code == 0, out
    assert "1 order cells written" in out
    assert not list((env / "hfcache").rglob("*.safetensors"))  # released after ordering
    local = tmp_path / "local"
    shutil.copytree(hub_history / "org/pythia-tiny", local, ignore=shutil.ignore_patterns("main"))
    order = ["order", f"local:{local}", "-d", "math", "--batch-size", "4"]
    for args in (["score", f"local:{local}", *FAST], order):
        code, out = run(*args, "--out", tmp_path / "local.zarr")
        assert code == 0, out
    hub_order = open_cube(tmp_path / "hub.zarr")["drop_order"].sel(step=4).squeeze("model", drop=True)
    local_order = open_cube(tmp_path / "local.zarr")["drop_order"].sel(step=4).squeeze("model", drop=True)
    xr.testing.assert_equal(hub_order.load(), local_order.load())
    assert set(hub_order["strategy"].values) == {"one-shot", "iterative"}


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_chain() -> str:
    """The README's first Python block (its section "Python"): the whole chain."""
    text = README.read_text()
    start = text.index("```python\n", text.index("## Python")) + len("```python\n")
    return text[start:text.index("```", start)]


@pytest.mark.slow  # the whole chain: scoring, iterative orders, lm-eval, timing
def test_the_readme_chain_runs_from_python_alone(tmp_path, monkeypatch):
    """The README's Python example, run as written in a fresh folder: score, order, the study from
    the cube and Table 1, with settings objects only; it asserts itself that no CLI module was
    imported. The plans are the ones asked for, under the baseline."""
    seed_trained_series(tmp_path / "cache")  # builtin:tiny, trained once and kept (tests/_support.py)
    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", readme_chain()], capture_output=True, text=True, timeout=900,
                       stdin=subprocess.DEVNULL,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    firsts = [line.split()[0] for line in r.stdout.splitlines() if line.split()]
    rows = [w for w in firsts if w in ("baseline", "Attn-2", "Block-2")]  # Table 1's row labels
    assert rows[0] == "baseline" and sorted(rows[1:]) == ["Attn-2", "Block-2"], r.stdout
    assert (tmp_path / "out/py/study/results.zarr").is_dir()
