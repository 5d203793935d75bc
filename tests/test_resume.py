"""A real `redundancy score` subprocess killed mid-series resumes to exactly the uninterrupted cube."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from redundancy import open_cube
from redundancy.cube import CubeStore

from _support import write_series

pytestmark = pytest.mark.slow  # kills a scoring subprocess mid-run

ARGS = ["-d", "math", "-d", "code", "--samples", "24", "--seq-len", "128", "--batch-size", "4"]


def _score(series: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "redundancy.cli", "score", f"local:{series}", "--out", str(out), *ARGS]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def slow_series(tmp_path_factory) -> Path:
    return write_series(tmp_path_factory.mktemp("slow"), [0, 1, 2, 4, 8, 16], hidden=256)


def test_killed_run_resumes_to_the_same_cube(slow_series, tmp_path):
    full, resumed = tmp_path / "full.zarr", tmp_path / "resumed.zarr"
    assert _score(slow_series, full).wait(timeout=600) == 0

    proc = _score(slow_series, resumed)
    deadline = time.time() + 300
    while time.time() < deadline and not CubeStore(resumed).cell_paths():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_at_kill = len(CubeStore(resumed).cell_paths())
    assert 1 <= n_at_kill < 12, "the run must be killed mid-series"

    rerun = _score(slow_series, resumed)
    output = rerun.communicate(timeout=600)[0].decode()
    assert rerun.returncode == 0, output
    assert f"{12 - n_at_kill} cells written" in output

    a, b = open_cube(full).load(), open_cube(resumed).load()
    assert [p.relative_to(full) for p in CubeStore(full).cell_paths()] == \
           [p.relative_to(resumed) for p in CubeStore(resumed).cell_paths()]
    for var in ("importance", "importance_no_residual", "angular_distance", "relative_magnitude",
                "fingerprint"):
        xr.testing.assert_equal(a[var], b[var])  # labels and values
    assert not list(resumed.glob("cells/*/*/.step-*.tmp-*"))  # partial cells of the killed run were cleaned
