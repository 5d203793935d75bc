"""`--executor ray`: a local Ray cluster of 2 workers scores the same cube as one process, and a
task whose worker process is killed is retried without rewriting the cells it had written."""
from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass, replace
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
    file remembers; it lists the cells on disk at the death with their inodes)."""

    step: int
    marker: Path
    store: Path

    def release(self, ckpt):
        if ckpt.step == self.step and not self.marker.exists():
            cells = {str(p): p.stat().st_ino for p in CubeStore(self.store).cell_paths()}
            self.marker.write_text(json.dumps(cells))
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
        series, tmp_path / "cube.zarr", SETTINGS, events, fetcher=RecordPid(tmp_path), num_workers=2
    )

    assert_same_cube(series, reference, CubeStore(tmp_path / "cube.zarr"))
    assert len({p.read_text() for p in tmp_path.glob("*.pid")}) >= 2, "two worker processes took part"
    assert sorted(events.written) == sorted(
        (c.step, d) for c in series.checkpoints for d in SETTINGS.datasets
    )
    assert sorted(s for s, state in seen if state == "scored") == [c.step for c in series.checkpoints]

    again = Events(checkpoint=lambda ckpt, state: seen.append((ckpt.step, state)))
    score_series_ray(series, tmp_path / "cube.zarr", SETTINGS, again, num_workers=2)
    assert again.written == [] and seen[-4:] == [(c.step, "done already") for c in series.checkpoints]


def test_a_duplicate_is_copied_in_its_originals_task(cluster, local_series, tmp_path):
    first, second = open_series(f"local:{local_series}").checkpoints[:2]
    series = Series("dup", [first, replace(second, duplicate_of=first.step)])
    events = score_series_ray(series, tmp_path / "cube.zarr", SETTINGS, num_workers=2)
    store = CubeStore(tmp_path / "cube.zarr")
    copy, original = (store.read_cell("dup", c.step, "math") for c in series.checkpoints[::-1])
    assert copy["duplicate_of"].item() == str(first.step)
    assert (copy["importance"].values == original["importance"].values).all() and len(events.written) == 4


def test_an_error_in_a_task_is_the_toolkits_one_line_error(cluster, local_series, tmp_path):
    too_long = ScoreSettings(datasets=("math",), n_samples=1, seq_len=300)  # the models' context is 256
    with pytest.raises(CalibrationError, match="longer than") as err:
        score_series_ray(
            open_series(f"local:{local_series}"), tmp_path / "cube.zarr", too_long, num_workers=1
        )
    assert "\n" not in str(err.value)


def test_a_killed_worker_is_retried_and_keeps_its_cells(cluster, local_series, reference, tmp_path):
    series, out, marker = open_series(f"local:{local_series}"), tmp_path / "cube.zarr", tmp_path / "died"
    events = score_series_ray(
        series, out, SETTINGS, fetcher=KillOnce(10, marker, out), num_workers=2, max_retries=1
    )

    at_death = json.loads(marker.read_text())  # the worker did die, once
    assert {str(CubeStore(out).cell_path(series.model, 10, d)) for d in SETTINGS.datasets} <= set(at_death)
    for path, inode in at_death.items():  # written before the death, not rewritten by the retry
        assert Path(path).stat().st_ino == inode
    assert_same_cube(series, reference, CubeStore(out))
    assert len(events.written) == len(series.checkpoints) * len(SETTINGS.datasets)


def test_a_worker_killed_on_every_try_fails_in_one_line(cluster, local_series, tmp_path):
    series, out = open_series(f"local:{local_series}"), tmp_path / "cube.zarr"
    series = Series(series.model, [c for c in series.checkpoints if c.step == 10])
    with pytest.raises(RedundancyError, match="step 10 died") as err:
        score_series_ray(series, out, SETTINGS, fetcher=KillOnce(10, tmp_path / "died", out), max_retries=0)
    assert "\n" not in str(err.value)
    assert CubeStore(out).has_cell(series.model, 10, "math")  # kept for the next run


def test_a_store_with_other_settings_fails_in_the_driver(local_series, reference, monkeypatch):
    for name in ("init", "remote"):
        monkeypatch.setattr(ray, name, lambda *a, **k: pytest.fail("the store was checked after Ray started"))
    other = ScoreSettings(datasets=("math",), n_samples=8, seq_len=32)
    with pytest.raises(StoreError, match="other calibration settings"):
        score_series_ray(open_series(f"local:{local_series}"), reference.path, other)
