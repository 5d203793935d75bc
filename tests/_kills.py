"""Writer processes for the cube's concurrency and kill tests, and killing one at an instant inside
its work, bounded in time."""
from __future__ import annotations

import subprocess
import textwrap
import time

SETTINGS = dict(n_samples=3, seq_len=8, seed=0, pool_factor=4, packing="p")


def kill_after(proc: subprocess.Popen, lines: int, extra: float) -> None:
    """SIGKILL `proc` `extra` seconds after it printed `lines` lines (one per cell written): an instant
    inside the next cell's write, wherever that is. Bounded: 120 s at most."""
    deadline = time.time() + 120
    for _ in range(lines):
        if not proc.stdout.readline() or time.time() > deadline:
            break
    time.sleep(extra)
    proc.kill()
    proc.wait(timeout=30)


# python -c WRITER LOCATION FIRST LAST [--prepare]: writes cells FIRST..LAST-1 of model m, dataset x (the
# same values whichever process writes a step), printing each step once written. --prepare: first what a
# scoring run does on opening its cube (CubeStore.prepare), which records a cell that a killed writer
# published but did not record (write_cell alone keeps it unrecorded: it was there, so it is not written)
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from redundancy.cube import CubeStore, make_cell
    url, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = CubeStore.open(url, {settings!r})
    if "--prepare" in sys.argv[4:]:
        store.prepare()
    for step in range(first, last):
        rng = np.random.default_rng(step * 31 + 1)
        cell = make_cell(rng.random((3, 4, 3, 1)), ["importance"], model="m", step=step, dataset="x",
                         tokens=step * 10.0, provenance={{"fingerprint": "m-x"}})
        store.write_cell(cell)
        print(step, flush=True)
    store.compact()
""").format(settings=SETTINGS)


def two_writers_keep_every_cell_once(location: str) -> None:
    """Two WRITER processes write steps 0-13 and 6-19 of one cube at once: every cell is there once,
    reads back as written, and `check_cube` finds all 20 sound."""
    import sys

    import numpy as np

    from redundancy.cube import CubeStore, check_cube, make_cell, open_cube

    CubeStore.open(location, SETTINGS)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, location, str(a), str(b)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for a, b in ((0, 14), (6, 20))]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    cube = open_cube(location)
    assert list(cube.step.values) == list(range(20))
    for step in range(20):
        rng = np.random.default_rng(step * 31 + 1)  # WRITER's values for this step
        want = make_cell(rng.random((3, 4, 3, 1)), ["importance"], model="m", step=step, dataset="x",
                         tokens=0.0, provenance={})
        np.testing.assert_array_equal(cube.importance.sel(model="m", step=step, dataset="x").values,
                                      want.importance.values)
    report = check_cube(location)
    assert report.sound == 20 and not report.damaged and not report.foreign, report
