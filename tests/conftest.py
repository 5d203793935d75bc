"""Fixtures and hooks: a local series of tiny random checkpoints, the demo built once per run, hub
caches, the offline environment of every test, and the scheduling of `make test`'s two workers. The
helpers the tests import are in tests/_support.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from _support import built_once, seed_trained_series, write_series  # imports huggingface_hub (_models)

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    # `make test` runs two pytest-xdist workers on two cores: one torch thread each (and in each of
    # their subprocesses, through OMP_NUM_THREADS below: the CLI, lm-eval, notebook kernels), instead
    # of two threads each that wait on one another whenever the other worker holds a core
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _offline_environment():
    """Every test and fixture of the run, and their subprocesses, run offline: no test reaches the real
    hub (hub tests point the client at tests/_fakehub.py and lift this in their `env`). Set after
    huggingface_hub was imported (above), so it reaches subprocesses and our own offline checks
    (calibration), not the imported client's constants; the process environment is put back as it was
    when the run ends."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
        mp.setenv("TOKENIZERS_PARALLELISM", os.environ.get("TOKENIZERS_PARALLELISM", "false"))
        if WORKER:
            mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        yield


# Groups of tests that one pytest-xdist worker runs, one after another (`make test`: --dist loadgroup):
# the demo and every test that reads it (built once; a second worker would wait for it, idle), and
# the tests that start a local Ray cluster (a cluster each at once would share the two cores and Ray's
# ports; tests/test_ray.py's module-scoped cluster is started once).
# Besides, the tests of a module-scoped fixture that scores a cube or installs the wheel (seconds to tens of
# seconds on 2 cores) stay on one worker, which builds it once.
RAY_TESTS = ("tests/test_ray.py::", "tests/test_crawl.py::test_crawl_on_ray_workers_equals_the_local_crawl")
MODULE_FIXTURES = {"lab", "scored", "installed"}  # test_bad_inputs, test_own_data, test_wheel


def xdist_group(item) -> str | None:
    if {"demo_dir", "demo_build"} & set(item.fixturenames):
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


@pytest.fixture(scope="session")
def local_series(tmp_path_factory) -> Path:
    return write_series(tmp_path_factory.mktemp("series"), [0, 10, 100, 1000])


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> Path:
    """`redundancy demo` run once for the test run (once for all workers), in a fresh cache holding
    the series it trains (trained_series_cache: trained once for these inputs, then kept). The folder
    holds demo/ (the demo's --out) and cache/ (its REDUNDANCY_CACHE)."""
    from typer.testing import CliRunner

    from redundancy.cli import app

    def build(root: Path) -> None:
        seed_trained_series(root / "cache")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REDUNDANCY_CACHE", str(root / "cache"))
            result = CliRunner().invoke(app, ["demo", "--out", str(root / "demo")])
        assert result.exit_code == 0, result.output
        (root / "demo" / "output.txt").write_text(result.output)

    return built_once(tmp_path_factory, "demo", build)


@pytest.fixture()
def demo_dir(demo_build, monkeypatch) -> Path:
    """The demo's --out folder, with REDUNDANCY_CACHE set for the test to the demo's cache (where
    builtin:tiny is built)."""
    monkeypatch.setenv("REDUNDANCY_CACHE", str(demo_build / "cache"))
    return demo_build / "demo"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """For hub tests: fresh redundancy and hub caches, online (the client talks to tests/_fakehub.py)."""
    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "rcache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path
