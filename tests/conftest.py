"""Shared fixtures: a local series of tiny random checkpoints with a locally trained tokenizer."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import traceback
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from _models import tiny_model

# No test reaches the real hub: hub tests point the client at tests/_fakehub.py. This variable is
# set after huggingface_hub was imported (via _models), so it reaches subprocesses and our own
# offline checks (calibration), not the already-imported client's constants.
_OFFLINE_SET_HERE = "HF_HUB_OFFLINE" not in os.environ
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    """pytest-xdist's workers start with this process's environment: without the HF_HUB_OFFLINE set
    above, so that each imports the hub client as a plain run does (and then sets it, as above)."""
    if _OFFLINE_SET_HERE:
        os.environ.pop("HF_HUB_OFFLINE", None)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on two cores: one torch thread each (and in each of
    # their subprocesses: the CLI, lm-eval, notebook kernels), instead of two threads each that wait
    # on one another whenever the other worker holds a core
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Groups of tests that one pytest-xdist worker runs, one after another (`make test`: --dist loadgroup):
# the demo and every test that reads it (built once; a second worker would wait for it, idle), and
# the tests that start a local Ray cluster (a cluster each at once would share the two cores and Ray's
# ports; tests/test_ray.py's module-scoped cluster is started once).
# Besides, the tests of a module-scoped fixture that runs the CLI or pip in a subprocess (tens of
# seconds of imports on 2 cores) stay on one worker, which builds it once.
RAY_TESTS = ("tests/test_ray.py::", "tests/test_crawl.py::test_crawl_on_ray_workers_equals_the_local_crawl")
MODULE_FIXTURES = {"lab", "scored", "installed"}  # test_bad_inputs, test_own_data, test_wheel


def xdist_group(item) -> str | None:
    if "demo_dir" in item.fixturenames:
        return "demo"
    if item.nodeid.startswith(RAY_TESTS):
        return "ray"
    if MODULE_FIXTURES & set(item.fixturenames):
        return item.nodeid.split("::")[0]
    return None


def pytest_collection_modifyitems(config, items):
    """Each worker writes its tests' groups beside its temporary folder, for the scheduler below (the
    xdist_group mark cannot carry them: pytest-xdist 3.8 renames the test ids that pytest 9 no longer
    reads from the attribute it sets)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        groups = {item.nodeid: g for item in items if (g := xdist_group(item))}
        folder = config._tmp_path_factory.getbasetemp().parent
        (folder / f"xdist-groups-{worker}.json").write_text(json.dumps(groups))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup with the groups of xdist_group(): each group is one unit of work, sent whole
    to one worker, the larger first (the demo's, then the Ray tests'); every other test is its own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class GroupScheduling(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # read once every worker has collected (schedule() runs then)
                folder = config._tmp_path_factory.getbasetemp()
                self.groups = {k: v for f in sorted(folder.glob("xdist-groups-*.json"))
                               for k, v in json.loads(f.read_text()).items()}
            return self.groups.get(nodeid) or super()._split_scope(nodeid)

    return GroupScheduling(config, log)


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
# in a folder named by their digest, and train again whenever any of them changes.
REPO = Path(__file__).resolve().parent.parent
TRAINING_INPUTS = ("redundancy/sources/_tiny.py", "redundancy/sources/_task.py",
                   "redundancy/sources/_suites.py", "redundancy/calibration/_corpora.py",
                   "redundancy/data/builtin_tiny.yaml", "redundancy/data/suites.yaml")


def trained_series_cache() -> Path:
    """$REDUNDANCY_TEST_CACHE (default ~/.cache/redundancy-tests)/trained-DIGEST: the builtin:tiny
    series the demo trains (its recipe and tiny-seeds'), as trained by these inputs and libraries."""
    import sys

    import tokenizers
    import transformers

    digest = hashlib.sha256()
    for rel in TRAINING_INPUTS:
        digest.update(rel.encode() + b"\0" + (REPO / rel).read_bytes())
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


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """`redundancy demo` run once for the test run (once for all workers), in a fresh cache holding
    the series it trains (trained_series_cache: trained once for these inputs, then kept)."""
    from typer.testing import CliRunner

    from redundancy.cli import app

    root = run_folder(tmp_path_factory) / "demo"
    os.environ["REDUNDANCY_CACHE"] = str(root / "cache")

    def build(root: Path) -> None:
        seed_trained_series(root / "cache")
        result = CliRunner().invoke(app, ["demo", "--out", str(root / "demo")])
        assert result.exit_code == 0, result.output
        (root / "demo" / "output.txt").write_text(result.output)

    return built_once(tmp_path_factory, "demo", build) / "demo"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """For hub tests: fresh redundancy and hub caches, online (the client talks to tests/_fakehub.py)."""
    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "rcache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path
