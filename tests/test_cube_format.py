"""Cube format 2: opened from its index, equal to the cell-by-cell reading; a store that knows its
own contents (checksums and labels per cell); format-1 cubes read as they are and converted once."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from redundancy.cli import app
from redundancy.cube import CubeStore, make_cell, make_order_cell, open_cube
from redundancy.cube._open import _finish, _from_cells
from redundancy.errors import StoreError

from _kills import kill_after, two_writers_keep_every_cell_once

SETTINGS = dict(n_samples=3, seq_len=8, seed=0, pool_factor=4, packing="p")
runner = CliRunner()


def _cell(rng, model, step, dataset, layers, **provenance):
    return make_cell(rng.random((3, layers, 3, 2)), ["importance", "angular_distance"], model=model,
                     step=step, dataset=dataset, tokens=step * 10.0,
                     provenance={"fingerprint": f"{model}-{dataset}", "dtype": "float32", **provenance})


def _varied_store(path):
    """Two models of different depths, a missing cell, suite and stage provenance, orders on some steps."""
    rng = np.random.default_rng(0)
    store = CubeStore.open(path, SETTINGS)
    for model, layers, suite in (("m", 2, ""), ("org/other model", 5, "s")):
        for step in (0, 7, 70):
            for dataset in ("x", "y/z"):
                if (model, step, dataset) == ("m", 70, "x"):
                    continue
                store.write_cell(_cell(rng, model, step, dataset, layers, suite=suite,
                                       seed="1" if suite else "", stage="pre" if step < 70 else "anneal",
                                       identical_to_final="true" if step == 7 and model == "m" else ""))
        order = {(s, mod): list(rng.permutation(layers)) for s in ("one-shot", "iterative")
                 for mod in ("block", "attn")}
        store.write_cell(make_order_cell(order, layers, model=model, step=70, dataset="y/z",
                                         metric="importance"), kind="orders")
    store.compact()  # as a run ends: one base
    return store


def test_the_index_opens_the_cube_that_reading_every_cell_gives(tmp_path):
    """The reference is the earlier opener: each cell opened through xarray and combined on labels."""
    store = _varied_store(tmp_path / "c.zarr")
    got = open_cube(store.path)
    ref = _finish(*_from_cells(store), store)
    xr.testing.assert_identical(got.compute(), ref.compute())
    assert got.importance.chunks is not None  # lazy


def test_opening_reads_the_index_not_the_cells(tmp_path):
    """With every cell's files made unreadable, the cube still opens (labels, provenance, tokens);
    only computing values touches the cells, and then the read is refused, not wrong."""
    store = _varied_store(tmp_path / "c.zarr")
    for chunk in (store.path / "cells").rglob("c/0/0/0"):
        chunk.write_bytes(b"\0" * chunk.stat().st_size)
    cube = open_cube(store.path)
    assert cube.fingerprint.sel(model="m", step=0, dataset="x").item() == "m-x"
    assert cube.stage.sel(model="m").values.tolist() == ["pre", "pre", "anneal"]
    with pytest.raises(StoreError, match="chunk changed since it was written"):
        cube.importance.sel(model="m", step=0, dataset="x").values


def _scored(local_series, tmp_path):
    store = tmp_path / "cube.zarr"
    r = runner.invoke(app, ["score", f"local:{local_series}", "--out", str(store), *FAST])
    assert r.exit_code == 0, r.output
    return store


FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]


def _flip_a_byte(cell):
    chunk = cell / "importance" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))


def _big_endian(cell):
    meta = cell / "importance" / "zarr.json"
    meta.write_text(meta.read_text().replace('"little"', '"big"   '))  # same size


def _copied_over(cell):
    other = cell.parent / "step-000000000010"
    shutil.rmtree(other)
    shutil.copytree(cell, other)


FAULTS = {"byte flipped in a chunk": (_flip_a_byte, "changed since it was written"),
          "endianness edited in zarr.json": (_big_endian, "changed since it was written"),
          "cell copied over another step": (_copied_over, "copied or renamed here")}


@pytest.mark.slow  # scores a series twice
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_changed_cell_is_found_refused_and_rescored(local_series, tmp_path, fault):
    """Cases from the issue's fault probes: `check` said "sound" and every reader read other values."""
    change, said = FAULTS[fault]
    store = _scored(local_series, tmp_path)
    before = open_cube(store).importance.values
    cell = store / "cells" / "local~3a" / "math"
    cell = next(p for p in sorted(store.glob("cells/*/math/step-000000000100")))
    change(cell)
    r = runner.invoke(app, ["check", str(store)])
    assert r.exit_code == 1 and said in r.output and "3 cells sound, 1 damaged" in r.output, r.output
    if fault != "cell copied over another step":  # there the index still points at step 10's record
        with pytest.raises(StoreError, match="not what was written"):
            open_cube(store).importance.values  # refused: never other values
    r = runner.invoke(app, ["score", f"local:{local_series}", "--out", str(store), *FAST])
    assert r.exit_code == 0 and "damaged cell" in r.output, r.output
    np.testing.assert_array_equal(open_cube(store).importance.values, before)
    assert runner.invoke(app, ["check", str(store)]).exit_code == 0


@pytest.mark.slow
def test_a_renamed_cell_and_a_foreign_group_are_reported_never_read(local_series, tmp_path):
    import zarr

    store = _scored(local_series, tmp_path)
    before = open_cube(store).importance.values
    cells = sorted(store.glob("cells/*/math/step-*"))
    cells[1].rename(cells[1].parent / "step-000000000011")
    zarr.open_group(str(cells[0].parent.parent / "foreign"), mode="w").create_array("x", shape=(2,),
                                                                                    dtype="f4")
    r = runner.invoke(app, ["check", str(store)])
    assert r.exit_code == 1, r.output
    assert "step-000000000011: holds" in r.output and "copied or renamed here" in r.output
    assert "foreign: not a cell of this cube" in r.output
    assert "step-000000000010: missing" in r.output
    with pytest.raises(StoreError, match="missing"):
        open_cube(store).importance.values
    r = runner.invoke(app, ["score", f"local:{local_series}", "--out", str(store), *FAST])
    assert r.exit_code == 0 and "1 cells written" in r.output, r.output
    np.testing.assert_array_equal(open_cube(store).importance.values, before)
    r = runner.invoke(app, ["check", "--repair", str(store)])
    assert r.exit_code == 1 and "1 removed" in r.output, r.output  # the foreign group is still there
    assert r.output.count("foreign: cells/") == 1
    shutil.rmtree(cells[0].parent.parent / "foreign")
    assert runner.invoke(app, ["check", str(store)]).exit_code == 0
    np.testing.assert_array_equal(open_cube(store).importance.values, before)


def _format_1(path):
    """A cube as the code before format 2 wrote it (cube/_store.py at d44d0aa): root format
    "redundancy-cube/1", cells through `Dataset.to_zarr` with provenance arrays and `.complete.json`
    holding each file's size."""
    rng = np.random.default_rng(1)
    path.mkdir()
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "format": "redundancy-cube/1", "settings": SETTINGS}}))
    cells = []
    for step in (0, 5):
        for dataset in ("x", "y"):
            cell = _cell(rng, "m", step, dataset, 3, revision=f"r{step}")
            final = path / "cells" / "m" / dataset / f"step-{step:012d}"
            cell.to_zarr(str(final), mode="w", zarr_format=3, consolidated=False)
            sizes = {str(p.relative_to(final)): p.stat().st_size
                     for p in sorted(final.rglob("*")) if p.is_file()}
            (final / ".complete.json").write_text(json.dumps(sizes))
            cells.append(cell)
    return cells


def test_a_format_1_cube_opens_as_it_is_and_converts_once_with_every_value(tmp_path):
    path = tmp_path / "old.zarr"
    cells = _format_1(path)
    before = open_cube(path).compute()
    assert CubeStore(path).format() == 1
    for c in cells:
        got = before.importance.sel(model="m", step=c.step.item(),
                                    dataset=c.dataset.item()).dropna("layer", how="all")
        xr.testing.assert_equal(got.drop_vars(set(got.coords) - set(c.coords)), c.importance)
    with pytest.raises(StoreError, match="check --repair"):
        CubeStore.open(path, SETTINGS).write_cell(cells[0])
    r = runner.invoke(app, ["check", "--repair", str(path)])
    assert r.exit_code == 0 and "4 converted" in r.output, r.output
    assert CubeStore(path).format() == 2 and not list(path.rglob("revision/zarr.json"))
    xr.testing.assert_identical(open_cube(path).compute(), before)
    assert runner.invoke(app, ["check", str(path)]).exit_code == 0


@pytest.mark.slow  # a writer process killed at many instants
def test_kills_at_any_instant_leave_no_half_cell_and_an_index_that_reads(tmp_path):
    """A process writes cells in a loop; it is SIGKILLed at instants spread over a cell's write. Every cell
    the index records reads back whole; `check` then `check --repair` find nothing read as valid that is
    not."""
    path = tmp_path / "c.zarr"
    CubeStore.open(path, SETTINGS)
    code = textwrap.dedent(f"""
        import numpy as np
        from redundancy.cube import CubeStore, make_cell
        store = CubeStore.open({str(path)!r}, {SETTINGS!r})
        rng = np.random.default_rng()
        for step in range(10_000):
            c = make_cell(rng.random((3, 4, 3, 1)), ["importance"], model="m", step=step, dataset="x",
                          tokens=1.0, provenance={{}})
            store.write_cell(c)
            print(step, flush=True)
    """)
    for after, extra in ((1, 0.0), (2, 0.003), (4, 0.006), (6, 0.01), (9, 0.02), (12, 0.05)):
        kill_after(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True),
                   after, extra)
    store = CubeStore(path)
    recorded = store.records(refresh=True)
    assert recorded
    cube = open_cube(path).compute()  # every recorded cell reads: none half
    read = cube.importance.sel(step=[k[2] for k in recorded])
    assert not read.isnull().all(("layer", "module", "sample")).any()
    r = runner.invoke(app, ["check", str(path)])
    assert r.exit_code == 0, r.output  # half-written cells are temporary folders, never cells


def test_two_writers_on_a_folder_keep_every_cell_once(tmp_path):
    """As on object storage (test_cube_s3): each cell renamed into place by one writer, recorded once."""
    two_writers_keep_every_cell_once(str(tmp_path / "c.zarr"))


def _flip_index(path):
    base = next((path / "index").glob("base-*.parquet"))
    data = bytearray(base.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside the columns: tokens, steps, provenance, digests
    base.write_bytes(bytes(data))


INDEX_FAULTS = {
    "a bit flipped in the index's base": (_flip_index, "index: index/base-", "changed since it was written"),
    "a stray JSON object in index/": (lambda p: (p / "index" / "seg-zzz.json").write_text("{}"),
                                      "index/seg-zzz.json: not part of the index", None),
    "a file added inside a cell": (lambda p: (next((p / "cells").glob("m/x/step-*")) / "extra.bin")
                                   .write_text("hi"), "extra.bin, which was not written with it", None),
    "a file beside the cells": (lambda p: (p / "cells" / "m" / "x" / "junk.txt").write_text("hi"),
                                "foreign: cells/m/x/junk.txt: not a cell", None),
}


@pytest.mark.parametrize("fault", list(INDEX_FAULTS))
def test_damage_to_the_index_or_beside_the_cells_is_reported_and_repaired(tmp_path, fault):
    """Cases from a tryout: a flipped bit in the index changed tokens, steps and provenance with rc 0;
    a stray JSON file in index/ made every command fail; `check` passed a cell with an extra file and
    named a whole folder of good cells as foreign."""
    store = _varied_store(tmp_path / "c.zarr")
    before = open_cube(store.path).compute()
    change, said, refused = INDEX_FAULTS[fault]
    change(store.path)
    r = runner.invoke(app, ["check", str(store.path)])
    assert r.exit_code == 1 and said in r.output, r.output
    assert "foreign: cells/m/x:" not in r.output  # never the folder that holds good cells
    if refused:
        with pytest.raises(StoreError, match=refused):
            open_cube(store.path)
    elif fault != "a file added inside a cell":
        xr.testing.assert_identical(open_cube(store.path).compute(), before)  # ignored, values as they were
    r = runner.invoke(app, ["check", "--repair", str(store.path)])
    assert "Traceback" not in r.output, r.output
    if fault in ("a stray JSON object in index/", "a file beside the cells"):
        return  # not ours to remove: still reported
    assert r.exit_code == 0, r.output
    got = open_cube(store.path).compute()
    if fault == "a file added inside a cell":  # the cell was removed: NaN until the next score
        assert int(got.importance.isnull().all(("layer", "module", "sample")).sum()) > \
            int(before.importance.isnull().all(("layer", "module", "sample")).sum())
    else:
        xr.testing.assert_identical(got, before)


def test_a_lost_index_says_how_to_rebuild_it(tmp_path):
    store = _varied_store(tmp_path / "c.zarr")
    shutil.rmtree(store.path / "index")
    with pytest.raises(StoreError, match="check --repair"):
        open_cube(store.path)
    assert runner.invoke(app, ["check", "--repair", str(store.path)]).exit_code == 0
    reference = _finish(*_from_cells(store), store).compute()
    xr.testing.assert_identical(open_cube(store.path).compute(), reference)


def test_a_cell_whose_writer_died_before_recording_it_is_recorded_by_the_next_writer(tmp_path):
    """A writer killed between publishing a cell and adding its index record leaves a complete cell the
    index lacks. The next writer of that cell finds it there (write_cell returns False, the cell kept
    as it was) and records it, so the step opens; before, it stayed missing until a `prepare`."""
    from redundancy.cube._cellio import encode

    rng = np.random.default_rng(1)
    store = CubeStore.open(tmp_path / "c.zarr", SETTINGS)
    store.write_cell(_cell(rng, "m", 0, "x", 2))
    orphan = _cell(rng, "m", 7, "x", 2)
    files, record = encode(orphan, "cells")
    assert store.backend.publish(store.prefix("m", 7, "x"), files)  # published, never recorded: the kill
    assert open_cube(store.path)["step"].values.tolist() == [0]
    assert CubeStore.open(tmp_path / "c.zarr", SETTINGS).write_cell(_cell(rng, "m", 7, "x", 2)) is False
    cube = open_cube(store.path)
    assert cube["step"].values.tolist() == [0, 7]
    xr.testing.assert_equal(cube.importance.sel(step=7, model="m", dataset="x", drop=True).load(),
                            orphan.importance.drop_vars([c for c in orphan.importance.coords
                                                         if c not in ("layer", "module", "sample")]))
