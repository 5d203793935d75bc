"""Calibrating on one's own data: every local format scored into a cube, a hub spec read by the real
`datasets` client from the local hub server, and every bad input as one line with the store intact.

The hub side follows what `datasets` 5.2 asks for when streaming a parquet-only dataset repo (seen in
the server's request log: dataset info, README.md / .huggingface.yaml / dataset_infos.json lookups,
the tree listing, then the parquet file); tests/_fakehub.py serves dataset repos like model repos.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redundancy import open_cube

from _fakehub import FakeHub
from _support import cli_here as cli  # the CLI in this process
from _support import stored_scores

pytestmark = pytest.mark.slow  # runs the CLI in subprocesses

FAST = ["--samples", "4", "--seq-len", "32", "--batch-size", "4"]
WORDS = "the of and to in is was for on that with by as at from layer model drop".split()


def _text(i: int, n: int = 60) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n)) + f" record {i}."


def _write(folder: Path) -> dict[str, Path]:
    """The same 40 records in each format (txt: one file per record, in a folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"body": _text(i), "tags": ["a", "b"], "id": i} for i in range(40)]
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "d.json").write_text(json.dumps({"data": rows}))
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), folder / "d.parquet")
    with open(folder / "d.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["body", "id"])
        w.writeheader()
        w.writerows({"body": r["body"], "id": r["id"]} for r in rows)
    (folder / "txts").mkdir(exist_ok=True)
    for r in rows:
        (folder / "txts" / f"{r['id']:03d}.txt").write_text(r["body"])
    mixed = folder / "mixed"
    (mixed / "sub").mkdir(parents=True, exist_ok=True)
    (mixed / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
    pq.write_table(pa.table({"body": [r["body"] for r in rows[20:]]}), mixed / "sub" / "b.parquet")
    return {"jsonl": folder / "d.jsonl", "json": folder / "d.json", "parquet": folder / "d.parquet",
            "csv": folder / "d.csv", "txt": folder / "txts", "mixed": mixed}


def cli_process(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`redundancy ARGS` in a subprocess, for what is read at import: the hub endpoint, the width."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "redundancy.cli", *map(str, args)], capture_output=True,
                          text=True, env={k: v for k, v in env.items() if v is not None}, timeout=600)


def test_every_local_format_into_one_cube_with_stable_fingerprints(local_series, tmp_path):
    files = _write(tmp_path / "data")
    sets = [a for f in files.values() for a in ("-d", f)]
    for out in ("a.zarr", "b.zarr"):
        r = cli("score", f"local:{local_series / 'step-10'}", "--out", tmp_path / out, "--text-field", "body",
                *sets, *FAST)
        assert r.returncode == 0, r.stderr
    a, b = open_cube(tmp_path / "a.zarr"), open_cube(tmp_path / "b.zarr")
    assert sorted(a.dataset.values) == ["d.csv", "d.json", "d.jsonl", "d.parquet", "mixed", "txts"]
    assert (a.fingerprint.values == b.fingerprint.values).all()  # the same windows on every run
    # every format holds the same 40 records in the same order (mixed: a.jsonl's 20, then sub/b.parquet's
    # 20), so every set packs the same token stream: one fingerprint, and one set of scores, for all six
    assert len(set(a.fingerprint.values.ravel())) == 1
    imp = a.importance.squeeze(["model", "step"])
    for d in a.dataset.values:
        np.testing.assert_array_equal(imp.sel(dataset=d).values, imp.sel(dataset="d.jsonl").values)
    np.testing.assert_allclose(
        imp.sel(dataset="d.jsonl").values,
        stored_scores(local_series / "step-10", dataset=str(files["jsonl"]), text_field="body"),
        rtol=0,
        atol=1e-6,
    )
    src = {
        str(d): str(s)
        for d, s in zip(a.dataset.values, a.calibration_source.squeeze(["model", "step"]).values)
    }
    assert src["mixed"].startswith(f"file:{files['mixed'].resolve()}:body@xxh3:")


def test_hub_spec_through_the_real_datasets_client(local_series, tmp_path):
    data = tmp_path / "hub" / "datasets" / "acme" / "notes" / "main" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"body": [_text(i) for i in range(60)]}), data / "test-00000-of-00001.parquet")
    with FakeHub(tmp_path / "hub") as hub:
        env = {"HF_HUB_OFFLINE": None, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf")}
        r = cli_process(
            "score",
            f"local:{local_series / 'step-10'}",
            "--out",
            tmp_path / "h.zarr",
            "-d",
            "hf:acme/notes::test:body",
            *FAST,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        assert (
            "GET",
            "/datasets/acme/notes/resolve/" + hub.requests[-1][1].split("/resolve/")[1],
        ) in hub.requests
    cube = open_cube(tmp_path / "h.zarr")
    assert cube.dataset.values.tolist() == ["notes-test"]
    # the hub split's rows are the parquet file's rows: the same windows as that file read locally
    local = stored_scores(local_series / "step-10", dataset=str(data / "test-00000-of-00001.parquet"),
                          text_field="body")
    np.testing.assert_allclose(cube.importance.squeeze().values, local, rtol=0, atol=1e-6)
    assert str(cube.calibration_source.item()) == "hf:acme/notes::test:body"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scored(local_series, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("own") / "cube.zarr"
    r = cli("score", f"local:{local_series / 'step-10'}", "--out", out, "-d", "prose", *FAST)
    assert r.returncode == 0, r.stderr
    return out


def _bad(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty.jsonl").write_text("")
    (tmp / "rows.jsonl").write_text(json.dumps({"body": _text(1), "id": 1}) + "\n")
    (tmp / "short.txt").write_text("only a few words")
    (tmp / "latin.txt").write_bytes("line one\nline two\ncaf\xe9 au lait\n".encode("latin-1"))
    (tmp / "prose").mkdir()  # a folder named like the store's built-in set: another source, one name
    (tmp / "prose" / "a.jsonl").write_text(json.dumps({"text": _text(2) * 20}) + "\n")
    return {
        "missing": (["-d", str(tmp / "nope.jsonl")], "does not exist"),
        "empty": (["-d", str(tmp / "empty.jsonl")], "empty.jsonl is empty"),
        "field": (["-d", str(tmp / "rows.jsonl")], "has no field 'text'; its fields: body, id"),
        "short": (["-d", str(tmp / "short.txt")], "gives only 0 windows"),
        "utf8": (["-d", str(tmp / "latin.txt")], "latin.txt line 3: bytes that are not UTF-8"),
        "offline": (
            ["-d", "hf:acme/notes::test"],
            "switched off (HF_HUB_OFFLINE). Use an offline set instead: code, math, prose",
        ),
        "same name": (["-d", str(tmp / "prose")], "another source under the same name"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "field", "short", "utf8", "offline", "same name"])
def test_bad_data_is_one_line_and_the_store_is_kept(case, scored, local_series, tmp_path):
    args, needle = _bad(tmp_path)[case]
    before = _files(scored)
    r = cli("score", f"local:{local_series / 'step-10'}", "--out", scored, *args, *FAST)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert _files(scored) == before


def test_datasets_lists_every_set():
    r = cli_process("datasets", env={"COLUMNS": "200"})
    assert r.returncode == 0
    for name in ("c4", "pile", "dolma", "fineweb-edu", "slimpajama", "wikitext2", "prose"):
        assert f"│ {name} " in r.stdout
    assert "hf:Salesforce/wikitext:wikitext-2-raw-v1:test:text" in r.stdout
