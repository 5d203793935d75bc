"""Calibration documents from local files: .jsonl, .json, .parquet, .csv, .txt, or a folder of them.

A row's text is its `field` (a list field is joined item by item, as the registry joins fields);
a .txt file is one document. Files of a folder are read in sorted order, so the windows and their
fingerprint are the same on every run. Every fault is one CalibrationError naming the file.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import CalibrationError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")


def data_files(path: Path) -> list[Path]:
    """The readable files of `path` (itself, or a folder's, recursively, sorted)."""
    if not path.exists():
        raise CalibrationError(f"calibration data {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)
    if not files:
        raise CalibrationError(f"{path} holds no {', '.join(SUFFIXES)} files")
    if path.is_file() and path.suffix not in SUFFIXES:
        raise CalibrationError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    return files


def _text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CalibrationError(f"{path} line {line}: bytes that are not UTF-8 (at byte {exc.start}); "
                               "convert the file to UTF-8") from None


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".jsonl":
        for i, line in enumerate(_text(path).splitlines(), 1):
            if line.strip():
                yield _json(line, path, i)
    elif path.suffix == ".json":
        data = _json(_text(path), path, 1)
        rows = data if isinstance(data, list) else next(
            (v for v in data.values() if isinstance(v, list)), None)
        if rows is None:
            raise CalibrationError(f"{path}: expected a list of records (or an object holding one)")
        yield from rows
    elif path.suffix == ".csv":
        yield from csv.DictReader(_text(path).splitlines())
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq
        yield from pq.read_table(path).to_pylist()


def _json(text: str, path: Path, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path} line {line + exc.lineno - 1}: not JSON ({exc.msg})") from None


def file_documents(path: Path, field: str, to_text: Callable[[dict], str]) -> Iterator[str]:
    """Every document of `path`; refuses empty files and a `field` the rows lack (listing theirs)."""
    for f in data_files(path):
        if f.suffix == ".txt":
            text = _text(f)
            if not text.strip():
                raise CalibrationError(f"{f} is empty")
            yield text
            continue
        n = 0
        for row in _rows(f):
            if field not in row:
                raise CalibrationError(f"{f} has no field {field!r}; its fields: {', '.join(map(str, row))}. "
                                       "Choose one with --text-field")
            n += 1
            if (text := to_text(row)).strip():
                yield text
        if n == 0:
            raise CalibrationError(f"{f} is empty")
