"""Memory bounded by the work, not by the input: calibration files are read as streams until the pool
of windows is full, a long document is tokenized in pieces cut at the same places however it is
read, and a sparse file is refused after one piece instead of read to its end."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

import pytest
import torch

from redundancy.calibration import _PACKED, _packing, _pieces, _row_text, calibration_tokens, heldout_tokens
from redundancy.calibration._files import TextFile, file_documents
from redundancy.calibration._packing import POOL_FACTOR, pack
from redundancy.calibration._pieces import pieces
from redundancy.errors import CalibrationError

from _support import make_tokenizer

WORDS = "the of and to in is was for on that with by as at from layer model drop residual".split()


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _text(n_lines: int, seed: int = 0) -> str:
    """Prose lines (each ends with a full stop, no blank lines): n_lines of them, about 50 chars each."""
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(8)).capitalize() + f" {i}.\n"
                   for i in range(n_lines))


def _read(path: Path) -> list:
    return list(file_documents(path, "text", _row_text(["text"])))


def test_cuts_do_not_depend_on_how_the_text_is_read():
    text = _text(400) + "x" * 3000 + " tail " * 300  # newlines, then a run without any, then spaces
    whole = list(pieces([text], limit=1000))
    assert "".join(whole) == text and all(0 < len(p) <= 1000 for p in whole)
    rng = random.Random(0)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(text)), 40))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        assert list(pieces(chunks, limit=1000)) == whole
    # in prose, each piece ends at a line end between two non-blank characters
    assert all(p.endswith(".\n") for p in whole[:-1] if "x" not in p and "tail" not in p)


def test_a_long_document_gives_the_windows_of_the_whole(tok, monkeypatch):
    """Byte-level BPE cut between "X\\nY" gives the ids of the whole text: pieces change nothing."""
    docs = [_text(600, seed=s) for s in range(3)]  # 30k characters each
    whole = pack(docs, tok, n=16, seq_len=64, seed=0)
    monkeypatch.setattr(_pieces, "PIECE_CHARS", 2000)
    assert torch.equal(pack(docs, tok, n=16, seq_len=64, seed=0), whole)


def test_a_long_text_file_is_read_piece_by_piece(tok, tmp_path, monkeypatch):
    text = _text(2000)  # 100k characters
    path = tmp_path / "long.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())  # read as text: no BOM, \n
    short = tmp_path / "short.txt"
    short.write_text("a short note\n")
    assert _read(short) == ["a short note\n"]  # a short file stays one str
    monkeypatch.setattr(_pieces, "PIECE_CHARS", 4096)
    (doc,) = _read(path)
    assert isinstance(doc, TextFile)
    assert list(doc) == list(doc) == list(pieces([text], limit=4096))  # read again each time
    assert torch.equal(pack([doc], tok, n=8, seq_len=64, seed=3), pack([text], tok, n=8, seq_len=64, seed=3))


def test_the_fingerprint_of_a_long_file_is_stable_run_after_run(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(_pieces, "PIECE_CHARS", 4096)
    path = tmp_path / "long.txt"
    path.write_text(_text(3000))
    runs = []
    for _ in range(2):
        _PACKED.clear()
        runs.append(calibration_tokens(str(path), tok, n=8, seq_len=64, seed=1))
    assert runs[0].fingerprint == runs[1].fingerprint
    held = heldout_tokens(str(path), tok, n=4, seq_len=64, scored=(8, 64))
    stream = _packing._stream_windows([path.read_text()], tok, POOL_FACTOR * 8 + 4, 64)  # in order
    assert torch.equal(held.tokens, torch.from_numpy(stream[POOL_FACTOR * 8:]))  # those after the pool


def test_packing_stops_pulling_documents_once_the_pool_is_full(tok):
    pulled = count()

    def endless():
        for i in pulled:
            yield _text(4, seed=i)

    assert pack(endless(), tok, n=4, seq_len=32, seed=0).shape == (4, 32)
    # one tokenizer call's documents, the one that ends the call, and the one after (is it the last?)
    assert next(pulled) <= _packing._DOCS_PER_CALL + 2

    pieces_read = count()

    def endless_document():  # one document that never ends, as a huge file's pieces
        for i in pieces_read:
            yield _text(50, seed=i)

    assert pack([endless_document()], tok, n=4, seq_len=32, seed=0).shape == (4, 32)
    assert next(pieces_read) <= _packing._DOCS_PER_CALL + 2


def _refusal(path: Path) -> str:
    with pytest.raises(CalibrationError) as err:
        _read(path)
    return str(err.value)


@pytest.mark.parametrize("name", ["sparse.txt", "sparse.jsonl", "sparse.csv", "sparse.json"])
def test_a_sparse_file_is_refused_at_once(tmp_path, name):
    path = tmp_path / name
    path.touch()
    os.truncate(path, 10 << 30)  # 10 GiB of NUL bytes, none on the disk
    t0 = time.perf_counter()
    message = _refusal(path)
    assert time.perf_counter() - t0 < 20  # it was read for 90 s (and more memory than the machine had)
    assert message.startswith(f"{path} holds no text in its first ") and "only NUL bytes" in message


def test_nul_bytes_after_text_are_refused_where_packing_reaches_them(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(_pieces, "PIECE_CHARS", 4096)
    path = tmp_path / "tail.txt"
    path.write_text(_text(1000))  # 40k characters, then a sparse tail
    os.truncate(path, 1 << 30)
    with pytest.raises(CalibrationError, match=r"tail.txt holds no text after its first [\d.]+ kB, only NUL"):
        pack(_read(path), tok, n=256, seq_len=64, seed=0)  # 64k tokens: more than the text gives
    assert pack(_read(path), tok, n=4, seq_len=32, seed=0).shape == (4, 32)  # a pool within the text


def test_blank_files_are_refused(tmp_path, monkeypatch):
    (tmp_path / "blank.txt").write_text(" \n\n\t\n")
    assert _refusal(tmp_path / "blank.txt") == f"{tmp_path / 'blank.txt'} is empty"
    monkeypatch.setattr(_pieces, "PIECE_CHARS", 1000)
    path = tmp_path / "blanks.txt"
    path.write_text("\n" * 30_000 + "text at last\n")
    from redundancy.calibration import _files
    monkeypatch.setattr(_files, "NO_TEXT_CHARS", 10_000)
    assert _refusal(path).startswith(f"{path} holds no text in its first 1")
    monkeypatch.setattr(_files, "NO_TEXT_CHARS", 100_000)
    (doc,) = _read(path)
    assert "".join(doc) == "\n" * 30_000 + "text at last\n"  # the blank start kept, in order


def test_bytes_that_are_not_utf8_far_into_a_file_name_their_line(tmp_path, monkeypatch):
    monkeypatch.setattr(_pieces, "PIECE_CHARS", 4096)
    lines = _text(3000).encode().splitlines(keepends=True)
    lines[2499] = b"caf\xe9 au lait\n"
    path = tmp_path / "latin.txt"
    path.write_bytes(b"".join(lines))
    (doc,) = _read(path)  # the first pieces are UTF-8
    with pytest.raises(CalibrationError) as err:
        list(doc)
    assert str(err.value) == (f"{path} line 2500: bytes that are not UTF-8 (at byte 3 of the line); "
                              "convert the file to UTF-8")
    path.write_bytes(b"x" * 3_000_000 + b"\xff")  # no line end: found without reading a line whole
    (doc,) = _read(path)
    with pytest.raises(CalibrationError, match=r"line 1: bytes that are not UTF-8 \(at byte 3000000 of"):
        list(doc)


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from _support import make_tokenizer
from redundancy.calibration import calibration_tokens
tok = make_tokenizer()
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
before = rss()
prints = [calibration_tokens(p, tok, n=32, seq_len=128).fingerprint for p in sys.argv[1:]]
print(json.dumps(dict(before=before, prints=prints)))
"""


def _big_files(folder: Path, size: int) -> list[Path]:
    """A .txt (one document) and a .jsonl (a record per paragraph) of `size` bytes each, prose."""
    block = _text(20_000)  # 1 MB, repeated
    txt, jsonl = folder / "big.txt", folder / "big.jsonl"
    records = "".join(json.dumps({"text": block[i:i + 400]}) + "\n" for i in range(0, len(block), 400))
    for path, unit in ((txt, block), (jsonl, records)):
        with open(path, "w") as fh:
            for _ in range(size // len(unit) + 1):
                fh.write(unit)
    return [txt, jsonl]


@pytest.mark.slow
def test_a_200_mb_file_is_packed_in_bounded_memory(tmp_path):
    """The old reader held a .txt whole and tokenized it at once: 2.5 GB of peak RSS at 10 MB,
    4.7 GB at 20 MB (and 90 s for a sparse file); here the peak is the imports plus a few tens of MB
    whatever the size (benchmarks/calibration_memory.py prints it up to 1 GB)."""
    files = _big_files(tmp_path, 200_000_000)
    code = CHILD.format(tests=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, files)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the maximum of all children
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err
    result, peak = json.loads(out.splitlines()[-1]), usage.ru_maxrss * 1024
    assert len(set(result["prints"])) == 2
    # the step's own growth: 66-180 MiB measured alone, 670 MiB once in a full-suite run on a loaded
    # machine (allocator arenas of the reader threads); the old reader needed tens of GB at this size
    assert peak - result["before"] < 2**30, (peak, result)
