"""Nothing lost, round two: a store never destroys another store; conversions, repairs and figures
survive SIGKILL at every step; reading needs no write access; damage is found and repaired from the
previous version, never read as empty."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from redundancy._atomic import check_output
from redundancy._stores import store_kind
from redundancy.cli import app
from redundancy.cube import CubeStore, make_cell
from redundancy.errors import RedundancyError, StoreError
from redundancy.study.results import (
    _objects,
    _row,
    check_results,
    open_results,
    write_results,
)

from _support import whole_figure

SETTINGS = dict(n_samples=3, seq_len=8, seed=0, pool_factor=4, packing="p")
PLANS = ["baseline", "Attn-2", "Attn-4", "MLP-2", "Block-2"]
runner = CliRunner()


# ---------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (links not followed): file -> its sha256, link -> its target, folder."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def make_cube(path: Path, steps=(0, 10)) -> Path:
    rng = np.random.default_rng(0)
    store = CubeStore.open(path, SETTINGS)
    for step in steps:
        store.write_cell(make_cell(rng.random((3, 4, 3, 2)), ["importance", "angular_distance"], model="m",
                                   step=step, dataset="x", tokens=step * 10.0,
                                   provenance={"fingerprint": "f", "dtype": "float32"}))
    return path


def make_results(path: Path, plans=PLANS) -> Path:
    for i, plan in enumerate(plans):
        write_results(path, "m", 0, plan, {"t1": 0.7 - 0.05 * i, "t2": 0.6 - 0.04 * i},
                      {"tokens_per_s": 100.0 + 10 * i, "seconds_each": [1.0, 1.1]},
                      kind="baseline" if i == 0 else plan.split("-")[0].lower(), n_dropped=2 * (i > 0),
                      stderr={"t1": 0.01, "t2": 0.02})
    return path


def make_old_layout(path: Path, plans=PLANS) -> Path:
    """A results store as written before the versioned layout: one zarr group at the store's path."""
    ds = None
    for i, plan in enumerate(plans):
        row = _objects(_row("m", 0, plan, {"t": 0.5 + i / 100}, {"tokens_per_s": 10.0 + i},
                            dict(kind="baseline" if i == 0 else "attn", n_dropped=i, quant="none")))
        ds = row if ds is None else row.combine_first(ds)
    ds.to_zarr(str(path), zarr_format=3, consolidated=False)
    return path


def make_figures(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import analyses

    for name in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot(np.arange(50) ** (1 + (name == "b")))
        analyses.save(fig, path / name)
    return path


def make_zarr(path: Path) -> Path:
    import xarray as xr

    xr.Dataset({"a": ("x", np.arange(4.0))}).to_zarr(str(path), zarr_format=3, consolidated=False)
    return path


def make_model(path: Path, config: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def current(store: Path) -> Path:
    return store / os.readlink(store / "current")


def plans_of(store: Path, **kw) -> set[str]:
    return {str(p) for p in open_results(store, **kw)["plan"].values}


# ------------------------------------------- 1. a store never destroys another store

TARGETS = {
    "cube": make_cube,
    "results": make_results,
    "figures": make_figures,
    "zarr": make_zarr,
    "dropped": lambda p: make_model(p, {"model_type": "redundancy_dropped", "drop_attn_list": [1]}),
    "quantized": lambda p: make_model(p, {"model_type": "llama", "quantization_config": {"bits": 4}}),
    "checkpoint": lambda p: make_model(p, {"model_type": "llama"}),
    "study": lambda p: (make_results(p / "results.zarr", PLANS[:1]), (p / "models").mkdir(), p)[-1],
    "unknown": lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine"), p)[-1],
}


@pytest.mark.parametrize("kind", TARGETS)
def test_store_kind_tells_every_kind_apart(tmp_path, kind):
    assert store_kind(TARGETS[kind](tmp_path / "target")) == kind
    assert store_kind(tmp_path / "absent") == "empty"
    (tmp_path / "made").mkdir()
    assert store_kind(tmp_path / "made") == "empty"
    (tmp_path / "file.txt").write_text("x")
    assert store_kind(tmp_path / "file.txt") == "unknown"


def _writers(src: Path):
    """Every kind of writer, as each checks its --out before writing: the kind it may write into."""
    return {
        "cube": (lambda out: CubeStore.open(out, SETTINGS), {"cube"}),  # score, order
        "results": (lambda out: write_results(out, "m", 0, "new", {"t": 0.1}), {"results"}),  # evaluate
        "model": (lambda out: check_output(out, [src], overwrite=True),  # drop, quantize
                  {"dropped", "quantized", "checkpoint"}),
        "figures": (lambda out: check_output(out, [src], overwrite=True, kind="figures"), {"figures"}),
        "study": (lambda out: check_output(out, [src], overwrite=True, kind="study"), {"study"}),
    }


@pytest.mark.parametrize("writer", ["cube", "results", "model", "figures", "study"])
def test_every_writer_refuses_every_other_kind_with_every_byte_kept(tmp_path, writer):
    src = tmp_path / "src"
    src.mkdir()
    write, own = _writers(src)[writer]
    for kind, make in TARGETS.items():
        target = make(tmp_path / f"target-{kind}")
        before = snapshot(tmp_path)
        if kind in own:
            write(target)  # its own kind: written into, or accepted for --overwrite
            continue
        with pytest.raises(RedundancyError) as err:
            write(target)
        assert str(target) in str(err.value) and "\n" not in str(err.value), (writer, kind)
        assert snapshot(tmp_path) == before, (writer, kind)  # not even a lock file beside it
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    with pytest.raises(RedundancyError):
        write(file)
    assert file.read_text() == "mine"


def test_write_results_on_a_cube_or_any_zarr_store_is_refused(tmp_path):
    """Case: write_results on the demo's proxy.zarr (a cube) or any xarray-written zarr store rebuilt
    it with overwrite, as if it were the older results layout."""
    for store in (make_cube(tmp_path / "proxy.zarr"), make_zarr(tmp_path / "any.zarr")):
        before = snapshot(tmp_path)
        with pytest.raises(StoreError, match="not a results store"):
            write_results(store, "m", 0, "baseline", {"t": 0.5})
        assert snapshot(tmp_path) == before
    with pytest.raises(StoreError, match="is a results store, not a redundancy cube"):
        CubeStore.open(make_results(tmp_path / "r.zarr", PLANS[:1]), SETTINGS)  # score --out RESULTS


@pytest.fixture(scope="module")
def dropped_model(local_series, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dropped") / "Attn-1"
    r = runner.invoke(app, ["drop", str(local_series / "step-10"), "--attn", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("kind", ["cube", "dropped", "figures", "zarr"])
def test_evaluate_out_onto_another_store_is_refused_with_every_byte_kept(local_series, dropped_model,
                                                                       tmp_path, monkeypatch, kind):
    """Case: `evaluate MODEL --out CUBE.zarr` deleted the cube (606 entries) and left a one-row results
    store, rc 0."""
    import redundancy.study as study

    monkeypatch.setattr(study, "evaluate_with_stderr", lambda *a, **kw: ({"t": 0.5}, {"t": 0.01}))
    if kind == "dropped":
        target = tmp_path / "Attn-1"
        shutil.copytree(dropped_model, target)
    else:
        target = TARGETS[kind](tmp_path / f"{kind}-out")
    before = snapshot(tmp_path)
    r = runner.invoke(app, ["evaluate", str(local_series / "step-10"), "--out", str(target)])
    assert r.exit_code == 1 and "not a results store" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) <= 3  # one line (rich may wrap a long path)
    assert snapshot(tmp_path) == before
    r = runner.invoke(app, ["evaluate", str(local_series / "step-10"), "--out", str(tmp_path / "r.zarr")])
    assert r.exit_code == 0, r.output  # a results store is still written as before
    assert plans_of(tmp_path / "r.zarr") == {"baseline"}


def test_figures_are_drawn_only_where_figures_belong(tmp_path):
    cube = make_cube(tmp_path / "c.zarr")
    results = make_results(tmp_path / "r.zarr", PLANS[:1])
    for out in (results, cube / "figs", tmp_path / "docs"):
        if out.name == "docs":
            TARGETS["unknown"](out)
        before = snapshot(tmp_path)
        r = runner.invoke(app, ["heatmap", str(cube), "--out", str(out)])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert snapshot(tmp_path) == before
    for _ in range(2):  # drawn, then redrawn into its own figures folder
        r = runner.invoke(app, ["heatmap", str(cube), "--out", str(tmp_path / "figs")])
        assert r.exit_code == 0, r.output
    assert store_kind(tmp_path / "figs") == "figures"
    assert all(whole_figure(p) for p in (tmp_path / "figs").glob("*.p*"))


# ------------------------------------------- 2. conversions and repairs survive a kill

KILL_AT_EVERY_STEP = textwrap.dedent("""
    import json, os, shutil, signal, sys
    from pathlib import Path
    from redundancy.study.results import write_results  # imported and warmed once; each try is a fork
    template, root = Path(sys.argv[1]), Path(sys.argv[2])
    write_results(root / "warm.zarr", "m", 0, "warm", {"t": 0.0})
    shutil.rmtree(root / "warm.zarr")
    # every call that changes the file system's names: a kill before each is a kill after the one
    # before. Of a run of calls inside a temporary folder (its name says so) or inside a folder being
    # removed (rmtree's calls relative to it), only the first counts: the states between are alike
    OPS = [(os, n) for n in ("mkdir", "rename", "replace", "symlink", "unlink", "rmdir")]
    k = 0
    while True:
        k += 1
        store = root / f"kill-{k:04d}" / template.name
        shutil.copytree(template, store, symlinks=True)
        pid = os.fork()
        if pid == 0:
            count, last_hidden = [0], [False]
            def wrap(mod, name, real):
                def op(*a, **kw):
                    hidden = ".tmp-" in str(a[0]) or kw.get("dir_fd") is not None
                    counts, last_hidden[0] = not (hidden and last_hidden[0]), hidden
                    count[0] += counts
                    if counts and count[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*a, **kw)
                setattr(mod, name, op)
            for mod, name in OPS:
                wrap(mod, name, getattr(mod, name))
            write_results(store, "m", 0, "new", {"t": 0.9}, log=lambda line: None)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0, status
            shutil.rmtree(store.parent)  # the write that was not killed: nothing to check
            print(k - 1, flush=True)
            break
""")


def _kill_at_every_step(template: Path, root: Path) -> list[Path]:
    """Run write_results on a copy of `template` once per file-system step, SIGKILLed before that step
    (a real process killed, the code unchanged); returns the stores the kills left."""
    r = subprocess.run([sys.executable, "-c", KILL_AT_EVERY_STEP, str(template), str(root)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    kills = int(r.stdout.split()[-1])
    stores = sorted(root.glob(f"kill-*/{template.name}"))
    assert kills >= 10 and len(stores) == kills
    return stores


def _recovers(store: Path, rows: set[str], repair: bool = False) -> None:
    """The killed store reads every earlier row (and maybe the killed one), and the next write finishes
    or rolls back what the kill left: every row, no leftover beside or inside. Only a repair that was
    not switched to yet is reported (`repair`)."""
    notes = []
    assert rows <= plans_of(store, log=notes.append) <= rows | {"new"}, store
    assert bool(notes) <= repair, notes
    write_results(store, "m", 0, "after", {"t": 1.0}, log=notes.append)
    assert rows | {"after"} <= plans_of(store), store
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith("v-")) == ["current"], store
    assert 1 <= len(list(store.glob("v-*"))) <= 2
    assert sorted(p.name for p in store.parent.iterdir()) == sorted([store.name, store.name + ".lock"])
    assert check_results(store)[1]


@pytest.mark.slow  # a forked writer per step
def test_a_kill_at_each_step_of_a_conversion_keeps_every_row(tmp_path):
    """Case: SIGKILL while an older single-group store was converted left `.old.zarr.old-*` and
    `.old.zarr.tmp-*`, the store read as "not a results store" and the next write started a new one."""
    template = make_old_layout(tmp_path / "template" / "old.zarr")
    for store in _kill_at_every_step(template, tmp_path / "kills"):
        _recovers(store, set(PLANS))


@pytest.mark.slow  # a forked writer per step
def test_a_kill_at_each_step_of_a_repair_keeps_every_row(tmp_path):
    """The current version damaged: each step of the write that repairs it from the previous one."""
    template = make_results(tmp_path / "template" / "r.zarr")
    chunk = next(p for p in sorted((current(template) / "score").rglob("*")) if p.is_file()
                 and p.name != "zarr.json")
    chunk.unlink()
    for store in _kill_at_every_step(template, tmp_path / "kills"):
        _recovers(store, set(PLANS[:-1]), repair=True)  # the damaged version's last write is lost (said)


def test_leftovers_of_a_conversion_killed_by_the_earlier_code_are_put_back(tmp_path):
    """The exact leftovers the earlier conversion left when killed between its two renames: the store
    aside as `.old.zarr.old-*`, the new one as `.old.zarr.tmp-HOST-PID-*` (a dead process), nothing at
    `old.zarr`. They read as the store, and the next write puts it back with every row."""
    import socket

    aside = make_old_layout(tmp_path / ".old.zarr.old-0a1b2c3d")
    tmp = make_results(tmp_path / f".old.zarr.tmp-{socket.gethostname()}-999999999-0a1b2c3d", PLANS[:1])
    store = tmp_path / "old.zarr"
    seen = []
    assert plans_of(store, log=seen.append) == set(PLANS) and "killed conversion" in seen[0]
    r = runner.invoke(app, ["table", str(store)])
    assert r.exit_code == 0 and "Attn-4" in r.output, r.output
    write_results(store, "m", 0, "after", {"t": 1.0}, log=seen.append)
    assert plans_of(store) == set(PLANS) | {"after"}
    assert not aside.exists() and not tmp.exists() and (store / "current").is_symlink()


SAVE_KILLED = textwrap.dedent("""
    import builtins, os, signal, sys
    from pathlib import Path
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import analyses
    folder, k = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    real, count = builtins.open, [0]
    def open_(file, mode="r", *a, **kw):
        handle = real(file, mode, *a, **kw)
        if any(c in mode for c in "wax+") and Path(file).resolve().parent == folder:
            count[0] += 1
            if count[0] == k:  # killed with the file just opened for writing (truncated, if in place)
                os.kill(os.getpid(), signal.SIGKILL)
        return handle
    builtins.open = open_
    for name in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot(np.sin(np.arange(200) / (3 + (name == "b"))), lw=3)
        analyses.save(fig, folder / name)
""")


@pytest.mark.slow  # a subprocess per step
def test_figures_killed_over_a_figures_folder_leave_every_figure_whole(tmp_path):
    """Case: `figures` SIGKILLed over an existing figures folder left a complete PDF truncated under its
    final name."""
    folder = make_figures(tmp_path / "figs")
    old = snapshot(folder)
    for k in range(1, 20):
        r = subprocess.run([sys.executable, "-c", SAVE_KILLED, str(folder), str(k)], capture_output=True,
                           text=True, timeout=300)
        figures = sorted(p for p in folder.glob("*.p*") if not p.name.startswith("."))
        assert len(figures) == 4 and all(whole_figure(p) for p in figures), (k, r.stderr)
        assert store_kind(folder) == "figures"
        if r.returncode == 0:
            break
        assert r.returncode == -9, r.stderr
    assert k >= 4 and snapshot(folder) != old  # every write was killed once, then all were redrawn
    assert sorted(p.name for p in folder.iterdir()) == [".figures.json", "a.pdf", "a.png", "b.pdf", "b.png"]


def test_replacing_a_folder_is_one_step(tmp_path, monkeypatch):
    """atomic_dir(overwrite=True), as `drop/quantize --overwrite` use it: no instant without the folder."""
    from redundancy._atomic import atomic_dir

    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("old")
    seen, real = [], os.rename

    def rename(a, b):  # the fallback's two renames would show a moment without `final`
        seen.append(Path(b).name)
        return real(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with atomic_dir(final, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("new")
    monkeypatch.undo()
    assert (final / "a.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert seen == []  # swapped in one renameat2 call


# ------------------------------------------- 3. reading needs no write access

READ_ALL = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    from typer.testing import CliRunner
    from redundancy import open_cube
    from redundancy.cli import app
    from redundancy.study import open_results
    data, figs = Path(sys.argv[1]), Path(sys.argv[2])
    runner = CliRunner()
    out = {}
    for name, args in {"table": ["table", str(data / "r.zarr")],
                       "check_results": ["check", str(data / "r.zarr")],
                       "check_cube": ["check", str(data / "c.zarr")],
                       "figures": ["figures", str(data / "c.zarr"), "--out", str(figs)]}.items():
        r = runner.invoke(app, args)
        out[name] = [r.exit_code, r.output.replace(str(figs), "FIGS")]
    # variables in name order: zarr lists a group's members in no fixed order
    out["open_results"] = json.dumps(open_results(data / "r.zarr").to_dict(data="list"), sort_keys=True,
                                     default=str)
    out["open_cube"] = hashlib.sha256(open_cube(data / "c.zarr")["importance"].values.tobytes()).hexdigest()
    print(json.dumps(out))
""")


def _read_all(data: Path, figs: Path, read_only: bool) -> dict:
    cmd = [sys.executable, "-c", READ_ALL, str(data), str(figs)]
    if read_only:  # a private mount namespace: the read-only bind mount vanishes with the process
        cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" '
               '&& ! touch "$0/probe" 2>/dev/null && exec "$@"', str(data), *cmd]  # read-only, or it stops
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _stamps(root: Path) -> dict[str, tuple]:
    """snapshot, with each entry's modification time (links not followed)."""
    return {rel: (entry, os.lstat(root / rel).st_mtime_ns) for rel, entry in snapshot(root).items()}


def _read_only_possible(tmp_path: Path) -> str:
    """"" when a read-only bind mount can be made here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro '
                        '"$0" "$0" && ! touch "$0/x" 2>/dev/null', str(probe)],
                       capture_output=True, text=True)
    if r.returncode == 0 and not (probe / "x").exists():
        return ""
    return f"no read-only mount: {r.stderr.strip()}"


@pytest.mark.slow  # two subprocesses that draw every figure
def test_reads_need_no_write_access(tmp_path):
    """Case: `table RESULTS` on a read-only file system failed: it took the store's write lock to read.
    table, open_results, open_cube, check and figures --out elsewhere give the same output on a
    read-only copy as on a writable one, and create or change nothing in the store."""
    data = tmp_path / "data"
    make_cube(data / "c.zarr")
    make_results(data / "r.zarr")
    (data / "r.zarr.lock").unlink()  # the writes' lock: a reader must not make it again
    before = _stamps(data)
    writable = _read_all(data, tmp_path / "figs-w", read_only=False)
    assert _stamps(data) == before
    assert sorted(p.name for p in data.iterdir()) == ["c.zarr", "r.zarr"]  # no lock file
    assert writable["table"][0] == 0 and "Attn-4" in writable["table"][1]
    assert "warning" not in writable["table"][1]
    assert writable["check_results"][0] == 0 and writable["check_cube"][0] == 0
    assert writable["figures"][0] == 0
    if why := _read_only_possible(tmp_path):
        if os.geteuid() == 0:
            pytest.skip(f"root ignores permissions and {why}")
        subprocess.run(["chmod", "-R", "a-w", str(data)], check=True)
        try:
            read_only = _read_all(data, tmp_path / "figs-r", read_only=False)
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(data)], check=True)
    else:
        read_only = _read_all(data, tmp_path / "figs-r", read_only=True)
    assert read_only == writable
    assert sorted(p.name for p in (tmp_path / "figs-r").iterdir()) == \
        sorted(p.name for p in (tmp_path / "figs-w").iterdir())


def test_reading_creates_no_lock_file(tmp_path):
    store = make_results(tmp_path / "r.zarr", PLANS[:2])
    cube = make_cube(tmp_path / "c.zarr")
    before = snapshot(tmp_path)
    (tmp_path / "r.zarr.lock").unlink()
    before.pop("r.zarr.lock")
    open_results(store)
    assert runner.invoke(app, ["table", str(store)]).exit_code == 0
    assert runner.invoke(app, ["check", str(store)]).exit_code == 0
    assert runner.invoke(app, ["check", str(cube)]).exit_code == 0
    assert snapshot(tmp_path) == before


# ------------------------------------------- 6. damage is found and repaired, not read as empty


def _first_chunk(version: Path, var: str) -> Path:
    return next(p for p in sorted((version / var).rglob("*")) if p.is_file() and p.name != "zarr.json")


@pytest.mark.parametrize("damage", ["chunk", "metadata", "changed"])
def test_a_damaged_version_is_found_and_repaired_from_the_previous_one(tmp_path, damage):
    """Case: one chunk, or one variable's zarr.json, deleted: `table` printed every score as "-" with
    rc 0, and `evaluate --out` carried the damage into the next version."""
    store = make_results(tmp_path / "r.zarr")
    head = current(store)
    if damage == "chunk":
        _first_chunk(head, "score").unlink()
    elif damage == "metadata":
        (head / "score" / "zarr.json").unlink()
    else:
        chunk = _first_chunk(head, "score")
        chunk.write_bytes(bytes(len(chunk.read_bytes())))  # same size, other bytes
    r = runner.invoke(app, ["check", str(store)])
    assert r.exit_code == 1 and "damaged" in r.output and "score/" in r.output, r.output
    assert "repairs it from" in r.output and "Block-2" in r.output  # the write it loses, named
    r = runner.invoke(app, ["table", str(store)])
    assert r.exit_code == 0 and "warning" in r.output and "Block-2" in r.output
    rows = [line for line in r.output.splitlines() if "Attn-2" in line or "MLP-2" in line]
    scores = [cell.strip() for line in rows for cell in line.split("│")[2:4]]  # t1, t2
    assert len(scores) == 4 and "-" not in scores, r.output
    before = open_results(store, log=lambda line: None)
    assert set(before["plan"].values) == set(PLANS[:-1]) and before["score"].notnull().all()
    notes = []
    ds = write_results(store, "m", 0, "Block-2", {"t1": 0.5, "t2": 0.4}, log=notes.append)  # written again
    assert notes and "damaged" in notes[0]
    assert set(ds["plan"].values) == set(PLANS) and ds["score"].notnull().all()
    assert head not in store.iterdir() and runner.invoke(app, ["check", str(store)]).exit_code == 0


@pytest.mark.parametrize("link", ["deleted", "dangling"])
def test_a_lost_current_link_is_repaired(tmp_path, link):
    """Case: with `current` deleted or dangling every command said "not a results store" and nothing
    repaired it, though an earlier version could have."""
    store = make_results(tmp_path / "r.zarr")
    (store / "current").unlink()
    if link == "dangling":
        os.symlink("v-000099-0badc0de", store / "current")
    assert store_kind(store) == "results"
    r = runner.invoke(app, ["table", str(store)])
    assert r.exit_code == 0 and "warning" in r.output and "current link" in r.output and "Block-2" in r.output
    r = runner.invoke(app, ["check", str(store)])
    assert r.exit_code == 1 and "current link" in r.output
    write_results(store, "m", 0, "Joint-4", {"t1": 0.5}, log=lambda line: None)
    assert plans_of(store) == set(PLANS) | {"Joint-4"}
    assert runner.invoke(app, ["check", str(store)]).exit_code == 0


def test_nothing_whole_left_is_refused_in_one_line(tmp_path):
    store = make_results(tmp_path / "r.zarr")
    for version in store.glob("v-*"):
        _first_chunk(version, "tokens_per_s").unlink()
    before = snapshot(tmp_path)
    r = runner.invoke(app, ["table", str(store)])
    assert r.exit_code == 1 and "no whole version left" in r.output and "tokens_per_s/" in r.output
    with pytest.raises(StoreError, match="no whole version left"):
        write_results(store, "m", 0, "new", {"t1": 0.5})
    r = runner.invoke(app, ["check", str(store)])
    assert r.exit_code == 1 and "nothing whole is left" in r.output
    assert snapshot(tmp_path) == before
