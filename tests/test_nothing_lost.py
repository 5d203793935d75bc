"""Nothing lost: concurrent writers and SIGKILL at random instants keep every confirmed row of a
results store; outputs never replace their inputs; a killed drop leaves nothing loadable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from redundancy.cli import app
from redundancy.study.results import open_results, write_results

WRITER = textwrap.dedent("""
    import sys
    from redundancy.study.results import write_results
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        write_results(path, "m", 0, f"{tag}-{i}", {"task": i / n}, {"tokens_per_s": 1.0 + i})
        print(f"{tag}-{i}", flush=True)
""")

KILLER = textwrap.dedent("""
    import os, random, signal, sys, time
    import shutil
    from redundancy.study.results import write_results  # imported once; each writer is a forked process
    path, log, kills = sys.argv[1], sys.argv[2], int(sys.argv[3])
    write_results(path + ".warm", "m", 0, "warm", {"task": 0.5})  # lazy imports (dask: ~1 s) done once,
    shutil.rmtree(path + ".warm")  # not in each writer before its first row
    rng = random.Random(0)
    for k in range(kills):
        pid = os.fork()
        if pid == 0:
            for i in range(1000):
                write_results(path, "m", 0, f"k{k}-{i}", {"task": 0.5}, {"tokens_per_s": 2.0})
                with open(log, "a") as fh:  # confirmed: write_results returned
                    fh.write(f"k{k}-{i}\\n")
            os._exit(0)
        deadline = time.time() + 120  # its first row confirmed (a loaded machine takes its time), then
        while time.time() < deadline and \\
                f"k{k}-0\\n" not in (open(log).read() if os.path.exists(log) else ""):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))  # a random instant of a later write
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
""")


@pytest.mark.slow  # two writer processes
def test_two_writers_keep_all_rows(tmp_path):
    store = tmp_path / "results.zarr"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store), tag, "20"], stdout=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]
    outs = [p.communicate(timeout=600)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    plans = set(open_results(store)["plan"].values)
    assert plans == set(outs[0]) | set(outs[1]) and len(plans) == 40


@pytest.mark.slow  # forked writers killed
def test_sigkill_during_writes_keeps_confirmed_rows(tmp_path):
    store, log = tmp_path / "results.zarr", tmp_path / "confirmed.txt"
    r = subprocess.run([sys.executable, "-c", KILLER, str(store), str(log), "20"], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    confirmed = log.read_text().split()
    assert len({c.split("-")[0] for c in confirmed}) == 20  # every writer confirmed a row before its kill
    ds = write_results(store, "m", 0, "after", {"task": 1.0})  # still writable
    assert set(confirmed) | {"after"} <= set(ds["plan"].values)
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith("v-")) == ["current"]
    assert len(list(store.glob("v-*"))) == 2  # no orphan versions: the current one and the one before


def test_old_single_group_layout_is_read_and_converted(tmp_path):
    """Stores written before the versioned layout (a zarr group at the store's path) keep their rows."""
    import xarray as xr

    from redundancy.study.results import _objects, _row
    store = tmp_path / "old.zarr"
    _objects(
        _row("m", 0, "baseline", {"task": 0.5}, None, dict(kind="baseline", n_dropped=0, quant="none"))
    ).to_zarr(str(store), zarr_format=3, consolidated=False)
    assert isinstance(open_results(store), xr.Dataset)
    ds = write_results(store, "m", 0, "Attn-2", {"task": 0.4}, kind="attn", n_dropped=2)
    assert set(ds["plan"].values) == {"baseline", "Attn-2"} and (store / "current").is_symlink()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_drop_out_onto_its_source_is_refused(local_series, tmp_path, where):
    import shutil

    src = tmp_path / "ckpt"
    shutil.copytree(local_series / "step-10", src)
    before = _files(src)
    out = {"same": src, "inside": src / "dropped", "parent": tmp_path}[where]
    r = CliRunner().invoke(app, ["drop", str(src), "--attn", "1", "--out", str(out)])
    assert r.exit_code == 1 and "the input" in r.output and "Traceback" not in r.output
    assert _files(src) == before


def test_drop_refuses_an_existing_out_unless_overwrite(local_series, tmp_path):
    """A dropped model is replaced by another only with --overwrite; a folder this toolkit did not
    write is never replaced, --overwrite or not."""
    out, mine = tmp_path / "out", tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    drop = ["drop", str(local_series / "step-10"), "--attn", "1", "--out"]
    for extra in ([], ["--overwrite"]):
        r = CliRunner().invoke(app, [*drop, str(mine), *extra])
        assert r.exit_code == 1 and "did not write" in r.output and (mine / "keep.txt").read_text() == "mine"
    assert CliRunner().invoke(app, [*drop, str(out)]).exit_code == 0
    r = CliRunner().invoke(app, ["drop", str(local_series / "step-10"), "--attn", "2", "--out", str(out)])
    assert r.exit_code == 1 and "--overwrite" in r.output
    assert json.loads((out / "config.json").read_text())["drop_attn_list"] == [1]
    r = CliRunner().invoke(
        app, ["drop", str(local_series / "step-10"), "--attn", "2", "--out", str(out), "--overwrite"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["drop_attn_list"] == [2]


@pytest.mark.slow  # a drop subprocess killed
def test_killed_drop_leaves_nothing_loadable(local_series, tmp_path):
    """SIGKILL while the dropped checkpoint is being saved: no `out`, and the half-written folder is
    refused."""
    from redundancy.drop import load_any
    from redundancy.errors import RedundancyError

    code = textwrap.dedent(f"""
        import os, signal, transformers
        save = transformers.PreTrainedModel.save_pretrained
        def dying(self, folder, *a, **k):
            save(self, folder, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)  # killed once the weights are on disk, before the rest
        transformers.PreTrainedModel.save_pretrained = dying
        from redundancy.cli import app
        app(["drop", "{local_series / "step-10"}", "--attn", "1", "--out", "{tmp_path / "out"}"])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    assert not (tmp_path / "out").exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert len(partial) == 1 and (partial[0] / "config.json").exists()
    with pytest.raises(RedundancyError, match="half-written"):
        load_any(partial[0])


def test_damaged_cell_is_reported_and_rescored(local_series, tmp_path):
    """Chunks deleted from a finished cell: `check` lists it, the next run rescores it to the same values."""
    import numpy as np

    from redundancy import open_cube

    store = tmp_path / "cube.zarr"
    fast = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]
    runner = CliRunner()
    assert runner.invoke(app, ["score", f"local:{local_series}", "--out", str(store), *fast]).exit_code == 0
    before = open_cube(store).importance.values
    cell = sorted((store / "cells").glob("*/*/step-*"))[1]
    chunk = next(p for p in sorted((cell / "importance").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    r = runner.invoke(app, ["check", str(store)])
    assert (
        r.exit_code == 1
        and f"{cell.name}" in r.output
        and "missing" in r.output
        and "3 cells sound" in r.output
    )
    r = runner.invoke(app, ["score", f"local:{local_series}", "--out", str(store), *fast])
    assert r.exit_code == 0 and "damaged cell" in r.output and "1 cells written" in r.output
    np.testing.assert_array_equal(open_cube(store).importance.values, before)
    assert runner.invoke(app, ["check", str(store)]).exit_code == 0
