"""A checkpoint whose weights changed anywhere is noticed: local_digest hashes every byte of each
weight file (xxh3-128), and the hashes are cached under the cache root while a file is unchanged.

A re-run over a store scored from the old weights refuses them as another model under the same
name (cube/_store.py CubeStore.missing), in one line, instead of saying "already there".
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from redundancy import _digest
from redundancy.sources._checkpoint import local_digest

from _models import tiny_model
from _support import make_tokenizer

MIB = 1 << 20


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh digest cache; files written by the test count as settled at once (no racy window)."""
    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "rcache"))
    monkeypatch.setattr(_digest, "RACY_NS", 0)
    return tmp_path / "rcache" / _digest.CACHE_NAME


def _checkpoint(folder: Path) -> Path:
    """A tiny Llama of about 5 MiB (a vocabulary of 8192 makes 2 MiB embeddings), so its middle lies
    outside its first and last MiB, with a tokenizer and its step."""
    tiny_model("llama", seed=0, vocab=8192).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    (folder / "checkpoint.json").write_text(json.dumps({"step": 100, "tokens": 409600}))
    return folder


def _change_middle_tensor(path: Path) -> str:
    """Scale 16 float32 values of the tensor lying at the middle of the safetensors file, in place
    (same size, same inode), and put the old mtime back. Returns that tensor's name."""
    st = path.stat()
    with open(path, "r+b") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        middle = st.st_size // 2
        name, info = next((k, v) for k, v in header.items() if k != "__metadata__"
                          and 8 + n + v["data_offsets"][0] <= middle < 8 + n + v["data_offsets"][1] - 64)
        assert info["dtype"] == "F32"
        fh.seek(middle - middle % 4)
        values = struct.unpack("<16f", fh.read(64))
        fh.seek(middle - middle % 4)
        fh.write(struct.pack("<16f", *(1.5 * v + 0.25 for v in values)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    return name


def _score(folder: Path, out: Path):
    from redundancy.cli import app

    return CliRunner().invoke(app, ["score", f"local:{folder}", "--out", str(out), "-d", "math",
                                    "--samples", "4", "--seq-len", "32"])


def test_a_tensor_changed_mid_file_is_refused_as_another_model(tmp_path, cache):
    folder = _checkpoint(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    out = tmp_path / "c.zarr"
    r = _score(folder, out)
    assert r.exit_code == 0, r.output
    assert "1 cells written" in r.output
    r = _score(folder, out)
    assert r.exit_code == 0 and "(1 already there)" in r.output, r.output

    before = weights.read_bytes()
    name = _change_middle_tensor(weights)
    after = weights.read_bytes()
    assert name == "model.embed_tokens.weight" and len(after) == len(before) > 4 * MIB
    # the old digest (name, size, first and last MiB) could not see this edit
    assert before[:MIB] == after[:MIB] and before[-MIB:] == after[-MIB:] and before != after

    r = _score(folder, out)
    assert r.exit_code != 0
    assert "already there" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output  # one line (beside the progress bars), naming what to do
    assert "ckpt step 100 scored from other weights" in errors[0]
    assert "another model under the same name. Score it into another --out" in errors[0]


def test_every_byte_counts_and_the_old_digest_is_not_trusted(tmp_path, cache):
    folder = _checkpoint(tmp_path / "ckpt")
    first = local_digest(folder)
    assert first.startswith("xxh3:") and len(first) == len("xxh3:") + 16
    assert local_digest(folder) == first
    _change_middle_tensor(folder / "model.safetensors")  # mtime put back: ctime still moved
    assert local_digest(folder) != first


def test_cached_digest_is_reused_while_the_file_is_unchanged(tmp_path, cache):
    folder = _checkpoint(tmp_path / "ckpt")
    weights = (folder / "model.safetensors").resolve()
    digest = local_digest(folder)
    entries = json.loads(cache.read_text())
    assert list(entries) == [str(weights)]
    st = weights.stat()
    assert entries[str(weights)]["key"] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    assert entries[str(weights)]["xxh3_128"] == _digest.hash_file(weights)

    # a second listing reads the cache, not the file: a planted hash comes back, and nothing is written
    entries[str(weights)]["xxh3_128"] = "0" * 32
    cache.write_text(json.dumps(entries))
    written = cache.stat().st_mtime_ns
    planted = local_digest(folder)
    assert planted != digest and cache.stat().st_mtime_ns == written

    # any change of size, times or inode invalidates it: the file is read again and the entry replaced
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns - 1_000_000_000))
    assert local_digest(folder) == digest
    assert json.loads(cache.read_text())[str(weights)]["xxh3_128"] == _digest.hash_file(weights)


def test_recently_changed_files_are_hashed_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "rcache"))
    # files changed less than RACY_NS before their hashing are not cached: an hour's window, which the
    # files written just now are inside however loaded the machine (the real 2 s were once exceeded
    # between writing the checkpoint and hashing it)
    monkeypatch.setattr(_digest, "RACY_NS", 3600 * 10**9)
    folder = _checkpoint(tmp_path / "ckpt")
    digest = local_digest(folder)
    assert not (tmp_path / "rcache" / _digest.CACHE_NAME).exists()
    monkeypatch.setattr(_digest, "RACY_NS", 0)
    assert local_digest(folder) == digest  # the same digest, now cached
    assert (tmp_path / "rcache" / _digest.CACHE_NAME).exists()


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be a folder
    monkeypatch.setattr(_digest, "RACY_NS", 0)
    folder = _checkpoint(tmp_path / "ckpt")
    assert local_digest(folder) == local_digest(folder)


def test_a_second_writer_keeps_the_other_entries(tmp_path, cache):
    a, b = _checkpoint(tmp_path / "a"), tmp_path / "b"
    b.mkdir()
    (b / "model.safetensors").write_bytes(os.urandom(MIB))
    local_digest(a)
    local_digest(b)  # merges into the file a wrote, under its lock
    assert sorted(json.loads(cache.read_text())) == sorted(
        str((f / "model.safetensors").resolve()) for f in (a, b))
    (b / "model.safetensors").unlink()
    local_digest(a.parent / "a")  # nothing new: the cache is not rewritten, so b's entry stays
    (a / "model.safetensors").touch()
    local_digest(a)  # a rewrite drops entries of files that are gone
    assert list(json.loads(cache.read_text())) == [str((a / "model.safetensors").resolve())]


def test_two_processes_writing_the_cache_at_once_lose_nothing(tmp_path, cache):
    import subprocess
    import sys

    groups = []
    for g in "ab":
        files = [tmp_path / g / f"{i}.bin" for i in range(6)]
        files[0].parent.mkdir()
        for f in files:
            f.write_bytes(os.urandom(64 << 10))
            os.utime(f, ns=(0, 0))  # settled long ago (ctime still moves: RACY_NS is patched in the children)
        groups.append(files)
    code = ("import sys; from pathlib import Path; from redundancy import _digest\n"
            "_digest.RACY_NS = 0\n"
            "for f in sys.argv[1:]: _digest.file_digests([Path(f)])  # one cache write per file")
    procs = [subprocess.Popen([sys.executable, "-c", code, *map(str, files)], env=os.environ.copy())
             for files in groups]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    entries = json.loads(cache.read_text())
    assert sorted(entries) == sorted(str(f.resolve()) for files in groups for f in files)
    for f in (f for files in groups for f in files):
        assert entries[str(f.resolve())]["xxh3_128"] == _digest.hash_file(f)


def test_cells_scored_before_whole_file_digests_are_rescored_not_refused(tmp_path):
    """A store filled before every byte was hashed records `files:` digests (name, size, first and
    last MiB): they prove nothing about the weights, so the cell is rescored, and a real mismatch of
    whole-file digests is still refused."""
    import numpy as np

    from redundancy.cube import CubeStore, make_cell
    from redundancy.errors import StoreError

    store = CubeStore(tmp_path / "c.zarr")
    for step, source in ((1, "files:0123456789abcdef"), (2, "xxh3:0123456789abcdef")):
        cell = make_cell(np.zeros((2, 3, 3, 1)), ["importance"], model="m", step=step, dataset="math",
                         tokens=None, provenance={"source": source})
        assert store.write_cell(cell)
    said = []
    assert store.missing("m", 1, ["math"], source="xxh3:fedcba9876543210", log=said.append) == ["math"]
    assert said == ["m step 1 math: scored before whole-file weight digests; rescoring it"]
    with pytest.raises(StoreError, match="scored from other weights"):
        store.missing("m", 2, ["math"], source="xxh3:fedcba9876543210")
    assert store.missing("m", 2, ["math"], source="xxh3:0123456789abcdef") == []
