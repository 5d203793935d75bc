"""Calibration files as people export them, read by `datasets`' packaged readers: a CSV saved by a
spreadsheet (byte-order mark, Windows line ends), documents longer than the csv module's field limit,
compressed shards as pretraining corpora ship them, a folder mixing all of these; and every fault as
one CalibrationError naming the file and line.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import json
from pathlib import Path

import pytest
import zstandard

from redundancy.calibration import _row_text
from redundancy.calibration._files import data_files, file_documents
from redundancy.errors import CalibrationError

WORDS = "the of and to in is was for on that with by as at from layer model drop".split()


def _doc(i: int, n: int = 40) -> str:
    """A document with what CSV and JSON must quote or escape: commas, quotes, a line break, accents."""
    words = " ".join(WORDS[(i * 5 + k * 3) % len(WORDS)] for k in range(n))
    return f'{words}, "quoted" café №{i}\nsecond line of {i}.'


def _read(path: Path, field: str = "text") -> list[str]:
    return list(file_documents(path, field, _row_text([field])))


def _csv(path: Path, docs: list[str], **kw) -> Path:
    with open(path, "w", newline="", encoding=kw.pop("encoding", "utf-8")) as fh:
        w = csv.writer(fh, **kw)
        w.writerow(["id", "text"])
        w.writerows([i, d] for i, d in enumerate(docs))
    return path


def _jsonl(docs: list[str]) -> bytes:
    return "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()


DOCS = [_doc(i) for i in range(12)]


def test_csv_saved_by_a_spreadsheet_with_a_byte_order_mark(tmp_path):
    path = _csv(tmp_path / "sheet.csv", DOCS, encoding="utf-8-sig")  # as Excel saves "CSV UTF-8"
    assert path.read_bytes().startswith(b"\xef\xbb\xbfid,text")
    assert _read(path) == DOCS  # the header's first field is "id", not "\ufeffid"
    assert _read(path, "id") == [str(i) for i in range(len(DOCS))]


def test_csv_with_windows_line_ends(tmp_path):
    path = _csv(tmp_path / "crlf.csv", DOCS, lineterminator="\r\n")
    assert path.read_bytes().count(b"\r\n") == len(DOCS) + 1
    assert _read(path) == DOCS  # rows end at \r\n; the line break inside a quoted cell is kept as written


def test_csv_with_a_document_longer_than_the_csv_module_field_limit(tmp_path):
    long = ("a long document " * 12_500)[:200_000]
    assert len(long) == 200_000 > csv.field_size_limit()
    path = _csv(tmp_path / "long.csv", [DOCS[0], long, DOCS[1]])
    assert _read(path) == [DOCS[0], long, DOCS[1]]


def test_csv_cells_are_read_as_written(tmp_path):
    path = _csv(tmp_path / "cells.csv", ["NA", "", "null", "007", "1e3"])
    assert _read(path) == ["NA", "null", "007", "1e3"]  # not missing values nor numbers; blank skipped


def _shards(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """Shards in the forms corpora ship them, each with the documents it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [DOCS[0:3], DOCS[3:6], DOCS[6:9], DOCS[9:11], DOCS[11:]]
    out = {
        "jsonl.gz": (folder / "a-0000.jsonl.gz", parts[0]),  # the Pile, SlimPajama
        "json.gz": (folder / "b-0001.json.gz", parts[1]),  # Dolma: JSON lines named .json.gz
        "jsonl.zst": (folder / "c-0002.jsonl.zst", parts[2]),
        "json.bz2": (folder / "d-0003.json.bz2", parts[3]),  # an object holding the list of records
        "txt.gz": (folder / "e-0004.txt.gz", ["\n\n".join(parts[4])]),  # one document
    }
    out["jsonl.gz"][0].write_bytes(gzip.compress(_jsonl(parts[0])))
    out["json.gz"][0].write_bytes(gzip.compress(_jsonl(parts[1])))
    out["jsonl.zst"][0].write_bytes(zstandard.ZstdCompressor().compress(_jsonl(parts[2])))
    out["json.bz2"][0].write_bytes(bz2.compress(json.dumps({"rows": [{"text": d} for d in parts[3]]},
                                                           indent=1).encode()))
    out["txt.gz"][0].write_bytes(gzip.compress(out["txt.gz"][1][0].encode()))
    return out


@pytest.mark.parametrize("kind", ["jsonl.gz", "json.gz", "jsonl.zst", "json.bz2", "txt.gz"])
def test_compressed_shards(tmp_path, kind):
    path, docs = _shards(tmp_path)[kind]
    assert _read(path) == docs


def test_a_folder_mixing_them_reads_in_sorted_order(tmp_path):
    shards = _shards(tmp_path / "mix" / "shards")
    _csv(tmp_path / "mix" / "sheet.csv", DOCS[:2], encoding="utf-8-sig", lineterminator="\r\n")
    (tmp_path / "mix" / "notes.txt").write_bytes(b"\xef\xbb\xbfone note\r\nits second line\r\n")
    (tmp_path / "mix" / "README.md").write_text("not data")
    files = data_files(tmp_path / "mix")
    assert [f.relative_to(tmp_path / "mix").as_posix() for f in files] == [
        "notes.txt", *(f"shards/{p.name}" for p, _ in shards.values()), "sheet.csv"]
    expected = ["one note\nits second line\n"]  # a text file is read as text: \r\n -> \n, no BOM
    expected += [d for _, docs in shards.values() for d in docs] + DOCS[:2]
    assert _read(tmp_path / "mix") == expected


def test_reading_writes_nothing_beside_the_data_nor_in_the_hf_cache(tmp_path):
    import datasets

    shards = _shards(tmp_path / "data")
    hf_cache = Path(datasets.config.HF_DATASETS_CACHE)
    before = sorted(hf_cache.rglob("*")) if hf_cache.exists() else []
    listing = sorted((tmp_path / "data").rglob("*"))
    assert len(_read(tmp_path / "data")) == len(DOCS)
    assert sorted((tmp_path / "data").rglob("*")) == listing
    assert (sorted(hf_cache.rglob("*")) if hf_cache.exists() else []) == before
    assert len(listing) == len(shards)


def _refusal(path: Path) -> str:
    with pytest.raises(CalibrationError) as err:
        _read(path)
    return str(err.value)


def test_a_malformed_json_line_names_the_file_and_line(tmp_path):
    lines = _jsonl(DOCS[:4]).decode().splitlines(keepends=True)
    lines[2] = '{"text": "unterminated, "id": 2}\n'
    plain = tmp_path / "bad.jsonl"
    plain.write_text("".join(lines))
    assert _refusal(plain) == (f"{plain} line 3: not JSON (Expecting ',' delimiter at column 26); "
                               "each line must be one JSON record")
    shard = tmp_path / "bad.jsonl.gz"  # located through the decompression too
    shard.write_bytes(gzip.compress("".join(lines).encode()))
    assert _refusal(shard).startswith(f"{shard} line 3: not JSON")


def test_other_faults_name_the_file(tmp_path):
    (tmp_path / "doc.json").write_text('{\n  "rows": [\n    {"text": "a"},\n    {"text": oops}\n  ]\n}\n')
    assert _refusal(tmp_path / "doc.json").startswith(f"{tmp_path / 'doc.json'} line 4: not JSON")
    (tmp_path / "latin.csv").write_bytes("text\nfine\ncaf\xe9\n".encode("latin-1"))
    assert _refusal(tmp_path / "latin.csv").startswith(
        f"{tmp_path / 'latin.csv'} line 3: bytes that are not UTF-8")
    (tmp_path / "empty.jsonl.gz").write_bytes(gzip.compress(b"\n"))
    assert _refusal(tmp_path / "empty.jsonl.gz") == f"{tmp_path / 'empty.jsonl.gz'} is empty"
    (tmp_path / "t.parquet.gz").write_bytes(b"")
    assert "unknown format '.parquet.gz'" in _refusal(tmp_path / "t.parquet.gz")
    (tmp_path / "obj.json").write_text(json.dumps({"title": "no list here"}))
    assert "expected a list of records (or an object holding one)" in _refusal(tmp_path / "obj.json")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(_jsonl(DOCS[:2]))
    (folder / "b.csv").write_text("body\nno text field here\n")
    assert _refusal(folder).startswith(f"{folder / 'b.csv'} has no field 'text'; its fields: body")


def test_score_reads_a_bom_csv(local_series, tmp_path):
    from typer.testing import CliRunner

    from redundancy import open_cube
    from redundancy.cli import app

    path = _csv(tmp_path / "notes.csv", DOCS, encoding="utf-8-sig")
    out = tmp_path / "c.zarr"
    args = ["--out", str(out), "-d", str(path), "--samples", "4", "--seq-len", "32"]
    r = CliRunner().invoke(app, ["score", f"local:{local_series / 'step-10'}", *args])
    assert r.exit_code == 0, r.output
    assert "1 cells written" in r.output
    cube = open_cube(out)
    assert cube.dataset.values.tolist() == ["notes.csv"]
    assert str(cube.calibration_source.item()).startswith(f"file:{path.resolve()}:text@xxh3:")


def test_a_file_edited_between_runs_is_not_a_second_text_under_one_name(local_series, tmp_path):
    """Issue 24: a calibration file edited between two runs into one cube gave two texts under one
    label (rc 0). The recorded source carries a digest of the bytes: the second run is refused in one
    line saying the file changed; the cube keeps what it had."""
    from typer.testing import CliRunner

    from redundancy import open_cube
    from redundancy.cli import app

    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    out = tmp_path / "c.zarr"

    def score(step):
        return CliRunner().invoke(app, ["score", f"local:{local_series / step}", "--out", str(out), "-d",
                                        str(path), "--samples", "4", "--seq-len", "32"])

    assert score("step-10").exit_code == 0
    path.write_text("".join(json.dumps({"text": d.upper()}) + "\n" for d in DOCS))  # edited
    r = score("step-1000")
    assert r.exit_code == 1 and "changed since" in r.output and "notes.jsonl" in r.output, r.output
    assert open_cube(out).step.values.tolist() == [10]


def test_a_truncated_shard_is_named_and_called_truncated(tmp_path):
    """gzip raises EOFError at a stream that ends early (Python's gzip module): one line naming the
    shard, in a folder of good ones."""
    import gzip
    import json

    from redundancy.calibration._files import file_documents
    from redundancy.errors import CalibrationError

    words = [f"w{(i * 7919) % 10007}" for i in range(20000)]  # little repetition: the cut falls in the data
    rows = b"".join(json.dumps({"text": " ".join(words[i:i + 40])}).encode() + b"\n"
                    for i in range(0, 20000, 40))
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(rows))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(rows)[:3000])
    with pytest.raises(CalibrationError, match=r"b\.jsonl\.gz: cannot be read: it ends early or is damaged"):
        list(file_documents(tmp_path, "text", lambda r: r["text"]))


def test_a_json_fault_says_its_column(tmp_path):
    from redundancy.calibration._files import file_documents
    from redundancy.errors import CalibrationError

    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n{"text": "b\x01c"}\n')
    fault = r"line 2: not JSON \(Invalid control character at column 12\)"
    with pytest.raises(CalibrationError, match=fault):
        list(file_documents(tmp_path / "c.jsonl", "text", lambda r: r["text"]))
