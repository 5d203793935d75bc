"""`--executor ray`: a local Ray cluster of 2 workers scores the same cube as one process; a task
whose worker process is killed is retried, and the cells of the tasks that finished before stay as
they were; two Ray nodes that share no store folder fill the driver's cube (the tasks return their
cells, the driver writes them)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytest

from redundancy.cube import CubeStore
from redundancy.errors import CalibrationError, RedundancyError, StoreError
from redundancy.pipeline import Events, Fetcher, ScoreSettings, score_series
from redundancy.pipeline.ray_executor import ray_cluster, score_series_ray
from redundancy.sources import Series, open_series

pytestmark = pytest.mark.slow  # starts a Ray cluster

ray = pytest.importorskip("ray")

SETTINGS = ScoreSettings(datasets=("math", "code"), n_samples=4, seq_len=32, batch_size=4)


@dataclass
class RecordPid(Fetcher):
    """Notes which worker process scored each step."""

    folder: Path

    def fetch(self, ckpt):
        (self.folder / f"{ckpt.step}.pid").write_text(str(os.getpid()))
        return ckpt


@dataclass
class KillOnce(Fetcher):
    """SIGKILLs its own worker once `step`'s cells are written, on the first try only (the marker
    file remembers; it has the worker's pid and the cells in `store` at the death with their inodes)."""

    step: int
    marker: Path
    store: Path

    def release(self, ckpt):
        if ckpt.step == self.step and not self.marker.exists():
            cells = {str(p): p.stat().st_ino for p in CubeStore(self.store).cell_paths()}
            self.marker.write_text(json.dumps({"pid": os.getpid(), "cells": cells}))
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster():
    # workers cannot import this test module: ship the fetchers above by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with ray_cluster(num_workers=2) as r:
        yield r


@pytest.fixture(scope="module")
def reference(local_series, tmp_path_factory) -> CubeStore:
    """The single-process cube."""
    store = CubeStore.open(tmp_path_factory.mktemp("ref") / "cube.zarr", SETTINGS.calibration())
    score_series(open_series(f"local:{local_series}"), store, SETTINGS)
    return store


def assert_same_cube(series, a: CubeStore, b: CubeStore) -> None:
    """Same cells, and in each every value equal but the time it was scored."""
    assert [p.relative_to(a.path) for p in a.cell_paths()] == [p.relative_to(b.path) for p in b.cell_paths()]
    for ckpt in series.checkpoints:
        for d in SETTINGS.datasets:
            x, y = (s.read_cell(series.model, ckpt.step, d).drop_vars("scored_at") for s in (a, b))
            assert x.identical(y), (ckpt.step, d)


def test_two_workers_score_the_single_process_cube(cluster, local_series, reference, tmp_path):
    series = open_series(f"local:{local_series}")
    seen = []
    events = Events(checkpoint=lambda ckpt, state: seen.append((ckpt.step, state)))
    score_series_ray(
        series, tmp_path / "cube.zarr", SETTINGS, events=events, fetcher=RecordPid(tmp_path), num_workers=2
    )

    assert_same_cube(series, reference, CubeStore(tmp_path / "cube.zarr"))
    assert len({p.read_text() for p in tmp_path.glob("*.pid")}) >= 2, "two worker processes took part"
    assert sorted(events.written) == sorted(
        (c.step, d) for c in series.checkpoints for d in SETTINGS.datasets
    )
    assert sorted(s for s, state in seen if state == "scored") == [c.step for c in series.checkpoints]

    again = Events(checkpoint=lambda ckpt, state: seen.append((ckpt.step, state)))
    score_series_ray(series, tmp_path / "cube.zarr", SETTINGS, events=again, num_workers=2)
    assert again.written == [] and seen[-4:] == [(c.step, "done already") for c in series.checkpoints]


def test_a_duplicate_is_copied_in_its_originals_task(cluster, local_series, tmp_path):
    first, second = open_series(f"local:{local_series}").checkpoints[:2]
    series = Series("dup", [first, replace(second, duplicate_of=first.step)])
    events = score_series_ray(series, tmp_path / "cube.zarr", SETTINGS, num_workers=2)
    store = CubeStore(tmp_path / "cube.zarr")
    copy, original = (store.read_cell("dup", c.step, "math") for c in series.checkpoints[::-1])
    assert copy["duplicate_of"].item() == str(first.step)
    assert (copy["importance"].values == original["importance"].values).all() and len(events.written) == 4


def test_a_duplicate_of_a_stored_original_is_copied_from_the_cube(cluster, local_series, tmp_path):
    first, second = open_series(f"local:{local_series}").checkpoints[:2]
    out = tmp_path / "cube.zarr"
    score_series_ray(Series("dup", [first]), out, replace(SETTINGS, datasets=("math",)), num_workers=2)
    # the task's own store starts empty: it is given the original's math cell to copy, scores its code
    series = Series("dup", [first, replace(second, duplicate_of=first.step)])
    events = score_series_ray(series, out, SETTINGS, num_workers=2)

    assert sorted(events.written) == [(first.step, "code"), (second.step, "code"), (second.step, "math")]
    store = CubeStore(out)
    for d in SETTINGS.datasets:
        copy, original = (store.read_cell("dup", c.step, d) for c in (second, first))
        assert copy["duplicate_of"].item() == str(first.step)
        assert (copy["importance"].values == original["importance"].values).all()


def test_an_error_in_a_task_is_the_toolkits_one_line_error(cluster, local_series, tmp_path):
    too_long = ScoreSettings(datasets=("math",), n_samples=1, seq_len=300)  # the models' context is 256
    with pytest.raises(CalibrationError, match="longer than") as err:
        score_series_ray(
            open_series(f"local:{local_series}"), tmp_path / "cube.zarr", too_long, num_workers=1
        )
    assert "\n" not in str(err.value)


def test_a_killed_worker_is_retried_and_the_finished_cells_stay(cluster, local_series, reference, tmp_path):
    series, out, marker = open_series(f"local:{local_series}"), tmp_path / "cube.zarr", tmp_path / "died"
    # one task at a time: steps 0 and 10 have finished, and are stored, when step 100's worker dies
    events = score_series_ray(
        series, out, SETTINGS, fetcher=KillOnce(100, marker, out), num_workers=1, max_retries=1
    )

    died = json.loads(marker.read_text())  # the worker did die, once
    at_death, store = died["cells"], CubeStore(out)
    finished = {str(store.cell_path(series.model, s, d)) for s in (0, 10) for d in SETTINGS.datasets}
    assert set(at_death) == finished
    for path, inode in at_death.items():  # stored as their tasks finished, not rewritten since
        assert Path(path).stat().st_ino == inode
    assert_same_cube(series, reference, store)  # step 100's cells died with its worker: the retry made them
    assert len(events.written) == len(series.checkpoints) * len(SETTINGS.datasets)
    # the dead worker's private store, which it could not remove, was removed by the next task here
    assert not list(Path(tempfile.gettempdir()).glob(f"redundancy-ray-*-{died['pid']}-*"))


def test_a_worker_killed_on_every_try_fails_in_one_line(cluster, local_series, tmp_path):
    series, out = open_series(f"local:{local_series}"), tmp_path / "cube.zarr"
    series = Series(series.model, [c for c in series.checkpoints if c.step == 10])
    with pytest.raises(RedundancyError, match="step 10 died.*run again to resume") as err:
        score_series_ray(series, out, SETTINGS, fetcher=KillOnce(10, tmp_path / "died", out), max_retries=0)
    assert "\n" not in str(err.value)
    assert CubeStore(out).cell_paths() == []  # its cells died with it
    pid = json.loads((tmp_path / "died").read_text())["pid"]
    # the private store its SIGKILL left: the next task on this host would remove it (tested above)
    for left in Path(tempfile.gettempdir()).glob(f"redundancy-ray-*-{pid}-*"):
        shutil.rmtree(left)


def test_a_store_with_other_settings_fails_in_the_driver(local_series, reference, monkeypatch):
    for name in ("init", "remote"):
        monkeypatch.setattr(ray, name, lambda *a, **k: pytest.fail("the store was checked after Ray started"))
    other = ScoreSettings(datasets=("math",), n_samples=8, seq_len=32)
    with pytest.raises(StoreError, match="other calibration settings"):
        score_series_ray(open_series(f"local:{local_series}"), reference.path, other)


def test_cells_of_other_weights_are_refused_in_the_driver(local_series, reference, monkeypatch):
    for name in ("init", "remote"):
        monkeypatch.setattr(ray, name, lambda *a, **k: pytest.fail("the store was checked after Ray started"))
    series = open_series(f"local:{local_series}")
    ckpt = {c.step: c for c in series.checkpoints}
    swapped = Series(series.model, [replace(ckpt[10], path=ckpt[100].path)])  # step 10 with other weights
    with pytest.raises(StoreError, match="other weights"):
        score_series_ray(swapped, reference.path, SETTINGS)


# The driver of the two-node test, a process of its own (one Ray per process: this one may hold the
# local cluster above). argv: head address, series folder, cube path, settings (JSON), report path.
# A task on a CPU node lists the cube's folder and writes into it; then the driver scores, on the
# same connection (its worker is started once: importing the scoring code takes seconds).
DRIVER = """
import json, os, sys, tempfile
import ray
from redundancy.pipeline import Events, ScoreSettings
from redundancy.pipeline.ray_executor import score_series_ray
from redundancy.sources import open_series

address, series, out, settings, report = sys.argv[1:]

@ray.remote(num_cpus=1)
def probe(folder):
    seen = sorted(os.listdir(folder))
    with open(os.path.join(folder, "written-by-a-task"), "w") as f:
        f.write(ray.get_runtime_context().get_node_id())
    return ray.get_runtime_context().get_node_id(), seen, tempfile.gettempdir()

ray.init(address=address, log_to_driver=False)
node, seen, tmp = ray.get(probe.remote(os.path.dirname(out)))
states = []
events = Events(checkpoint=lambda ckpt, state: states.append((ckpt.step, state)))
score_series_ray(open_series("local:" + series), out, ScoreSettings(**json.loads(settings)), events=events)
with open(report, "w") as f:
    json.dump(dict(written=events.written, states=states, cpus=ray.cluster_resources().get("CPU"),
                   driver_node=ray.get_runtime_context().get_node_id(), task_node=node, seen=seen,
                   task_tmp=tmp), f)
"""


def _wait_for(path: Path, text: str, proc: subprocess.Popen, seconds: float) -> None:
    """Until `text` is in the file `path` (a process's log); fails when `proc` exits or time is up."""
    deadline = time.monotonic() + seconds
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{proc.args[:3]} did not start in {seconds} s:\n{path.read_text(errors='replace')}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    """End a `ray start --block`: SIGTERM to it alone (it drains its node and stops the processes it
    started, in order: a SIGTERM to all of them at once leaves it waiting ~30 s for a dead GCS), then
    SIGKILL to whatever is left of the process group it leads."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is gone already
        pass
    proc.wait(timeout=10)


@pytest.fixture()
def two_nodes(tmp_path_factory):
    """(head address, environment for its drivers, hidden folder, node temp folder): a Ray head that
    runs no task (0 CPUs), and a node of 1 CPU (one worker: the scoring code is imported once, which
    takes seconds) started in its own mount namespace, where a private
    tmpfs covers `hidden`: what it writes there the driver never sees, and the reverse. The node's
    TMPDIR is its own folder, so what its tasks leave in their temporary folders can be seen."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare --mount` (root)")
    hidden, node_tmp = tmp_path_factory.mktemp("hidden"), tmp_path_factory.mktemp("node-tmp")
    logs = tmp_path_factory.mktemp("ray-logs")
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    # this cluster's own token, given to each of its processes (a node that joins without
    # RAY_AUTH_MODE=token is refused by a head that found ~/.ray/auth_token)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    common = ["--temp-dir", ray_tmp, "--disable-usage-stats", "--object-store-memory", str(100 * 2**20),
              "--block"]
    exe = str(Path(sys.executable).with_name("ray"))
    procs = []
    try:  # both at once: the node waits for the head
        for name, cmd, extra in (
            ("head", [exe, "start", "--head", f"--port={port}", "--num-cpus=0",
                      "--include-dashboard=false"], {}),
            ("node", ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                      f'mount -t tmpfs tmpfs "{hidden}" && exec "$@"', "sh",
                      exe, "start", f"--address={address}", "--num-cpus=1"], {"TMPDIR": str(node_tmp)}),
        ):
            with open(logs / f"{name}.log", "wb") as f:
                procs.append(subprocess.Popen([*cmd, *common], stdout=f, stderr=subprocess.STDOUT,
                                              env={**env, **extra}, start_new_session=True))
        for name, proc in zip(("head", "node"), procs):
            _wait_for(logs / f"{name}.log", "Ray runtime started", proc, 120)
        yield address, env, hidden, node_tmp
    finally:
        for proc in reversed(procs):  # the node first: its tmpfs goes with its namespace's last process
            _stop(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_nodes_without_the_store_folder_fill_the_drivers_cube(two_nodes, local_series, reference, tmp_path):
    address, env, hidden, node_tmp = two_nodes
    series, out, report = open_series(f"local:{local_series}"), hidden / "cube.zarr", tmp_path / "report.json"
    (hidden / "written-by-the-driver").write_text("the node must not see this")
    subprocess.run([sys.executable, "-c", DRIVER, address, str(local_series), str(out),
                    json.dumps(asdict(SETTINGS)), str(report)], env=env, check=True, timeout=240)
    got = json.loads(report.read_text())

    # the tasks (1 CPU each) ran on the second node, the only one with CPUs, whose `hidden` is not ours
    assert got["cpus"] == 1 and got["task_node"] != got["driver_node"]
    assert got["seen"] == [] and not (hidden / "written-by-a-task").exists()
    assert_same_cube(series, reference, CubeStore(out))
    cells = [(c.step, d) for c in series.checkpoints for d in SETTINGS.datasets]
    assert sorted(map(tuple, got["written"])) == sorted(cells)
    assert sorted(map(tuple, got["states"])) == sorted((c.step, s) for c in series.checkpoints
                                                       for s in ("scoring", "scored"))
    assert got["task_tmp"] == str(node_tmp) and list(node_tmp.iterdir()) == []  # their own stores: removed
