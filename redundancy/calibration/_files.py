"""Calibration documents from local files, read by the `datasets` library's packaged readers.

Formats: .jsonl and .json (JSON lines, a list of records, or an object holding one), .csv, .parquet,
.txt (a file is one document); json, jsonl, csv and txt may also be compressed as pretraining
corpora ship their shards (.jsonl.gz, .json.gz, .jsonl.zst, .bz2, .xz). A folder is read recursively.

A row's text is its `field` (a list field is joined item by item, as the registry joins fields).
Read as the user meant: a byte-order mark (as spreadsheets save CSV), Windows line ends and documents
of any length. Files of a folder are read in sorted order, so the windows and their fingerprint are
the same on every run. Every fault is one CalibrationError naming the file, and the line where
there is one.

Everything is read as a stream, as packing pulls documents, and reading stops when its pool is full:
memory is bounded by the work, not by the input. Rows come from `datasets`' readers (streaming=True,
10 MB at a time): no Arrow cache is written, neither beside the data (which may be read-only) nor in
the Hugging Face cache; the few lock files `datasets` still makes go to a temporary folder removed
after each read. Local files need no network. A .txt file is read here, PIECE_CHARS characters at a
time, as `datasets`' text reader decodes it: one that fits a piece is one str; a longer one is a
TextFile, its pieces read when packed (_pieces.py: a 1 GB file is never one string). Files whose
start is NUL bytes (sparse or binary files) are refused after reading one MB, not read to their end.
"""
from __future__ import annotations

import codecs
import glob
import io
import json
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from ..errors import CalibrationError
from . import _pieces
from ._pieces import Document, pieces

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # by extension, as datasets and fsspec infer them
SUFFIXES = (*FORMATS, *COMPRESSIONS)  # what makes a -d spec a path (calibration/_spec.py)
_KINDS = (f"{', '.join(FORMATS)} files (json, jsonl, csv and txt also as "
          f"{', '.join(COMPRESSIONS)})")
# read CSV cells as written: "NA", "null" or "" are text, not missing values (and the text field is
# read as a string, not a number)
_CSV = dict(keep_default_na=False, na_filter=False)
BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20  # what the checks for NUL bytes and for bytes that are not UTF-8 read at a time
NO_TEXT_CHARS = 1 << 24  # blank characters at a .txt file's start before it is refused


def _base(path: Path) -> str:
    """`path`'s name in lower case without a compression suffix: "D.jsonl.gz" -> "d.jsonl"."""
    name = path.name.lower()
    return next((name[:-len(c)] for c in COMPRESSIONS if name.endswith(c)), name)


def file_format(path: Path) -> str | None:
    """The `datasets` builder reading `path` ("json", "csv", "parquet", "text"), from its name:
    "d.jsonl" and "d.jsonl.gz" -> "json". None when it is no data file (parquet compresses itself:
    a compressed .parquet is refused)."""
    base = _base(path)
    if base != path.name.lower() and base.endswith(".parquet"):
        return None
    return FORMATS.get(Path(base).suffix)


def data_files(path: Path) -> list[Path]:
    """The readable files of `path` (itself, or a folder's, recursively, sorted)."""
    if not path.exists():
        raise CalibrationError(f"calibration data {path} does not exist")
    if path.is_file():
        if file_format(path) is None:
            raise CalibrationError(f"{path}: unknown format {''.join(path.suffixes[-2:])!r}; "
                                   f"use {_KINDS}")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and file_format(p))
    if not files:
        raise CalibrationError(f"{path} holds no {_KINDS}")
    return files


def file_documents(path: Path, field: str, to_text: Callable[[dict], str]) -> Iterator[Document]:
    """Every document of `path`, read as packing pulls them (see the module); refuses empty files
    and a `field` the rows lack (listing theirs). Raises CalibrationError naming the file (and line)
    of any fault."""
    for f in data_files(path):
        if file_format(f) == "text":
            yield _text_document(f)
        else:
            yield from _row_documents(f, field, to_text)


class TextFile:
    """One .txt document longer than a piece: its pieces (_pieces.py), read from the file in bounded
    memory each time it is iterated. Raises CalibrationError (as _text_pieces) while iterated."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator[str]:
        return _text_pieces(self.path)

    def __repr__(self) -> str:
        return f"TextFile({str(self.path)!r})"


def _text_document(f: Path) -> Document:
    """A .txt file's one document: its text when it fits one piece, else a TextFile that reads it
    piece by piece. Reads at most two pieces here. Raises CalibrationError (see _text_pieces)."""
    it = _text_pieces(f)
    try:
        first, second = next(it), next(it, None)
    finally:
        it.close()
    return first if second is None else TextFile(f)


def _text_pieces(f: Path) -> Iterator[str]:
    """The pieces of a .txt file's text (see _pieces.py). Raises CalibrationError for a file that
    is blank ("is empty"), blank for its first NO_TEXT_CHARS characters, or NUL bytes for a whole
    piece (a sparse or binary file: refused after one piece, never read to its end)."""
    held: list[str] = []  # blank pieces before the first text: an empty file yields nothing
    read, seen = 0, False
    for piece in pieces(_text_chunks(f)):
        if "\x00" in piece and not piece.replace("\x00", "").strip():
            raise _nul_refusal(f, read, len(piece))
        read += len(piece)
        if not seen and not piece.strip():
            held.append(piece)
            if read > NO_TEXT_CHARS:
                raise CalibrationError(f"{f} holds no text in its first {_size(read)}, only blank lines")
            continue
        seen = True
        yield from held
        held = []
        yield piece
    if not seen:
        raise CalibrationError(f"{f} is empty")


def _size(chars: int) -> str:
    """A count of characters (bytes, for ASCII) as people read it: "262 kB", "16.8 MB"."""
    return f"{chars / 1e3:.3g} kB" if chars < 1e6 else f"{chars / 1e6:.3g} MB"


def _nul_refusal(f: Path, before: int, length: int) -> CalibrationError:
    """`f` holds NUL bytes (and blanks) only, for `length` characters after `before` of text."""
    where = f"after its first {_size(before)}" if before else f"in its first {_size(length)}"
    return CalibrationError(f"{f} holds no text {where}, only NUL bytes (a sparse or binary file?); "
                            "give a UTF-8 text file")


def _text_chunks(f: Path) -> Iterator[str]:
    """`f`'s text PIECE_CHARS characters at a time, as the text reader of `datasets` reads it:
    decompressed, UTF-8 with a byte-order mark dropped, line ends read as \\n. Raises
    CalibrationError naming the line of bytes that are not UTF-8, or why `f` cannot be read."""
    try:
        with _open(f) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None) as fh:
            while chunk := fh.read(_pieces.PIECE_CHARS):
                yield chunk
    except UnicodeDecodeError:
        raise _utf8_fault(f) from None
    except Exception as exc:  # gone, unreadable, a broken compressed stream (gzip's OSError, zstd's own)
        raise CalibrationError(_unreadable(f, exc)) from None


def _unreadable(f: Path, exc: BaseException) -> str:
    """Why `f` cannot be read, in one line. A compressed stream that ends early raises EOFError
    (gzip, bz2, lzma) or an error with no words (zstandard): said as a truncated or damaged file."""
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, EOFError) or not text:
        return (f"{f}: cannot be read: it ends early or is damaged ({type(exc).__name__}); "
                "copy or download it again")
    return f"{f}: cannot be read ({type(exc).__name__}: {text})"


def _utf8_fault(f: Path) -> CalibrationError:
    """The first line of `f` holding bytes that are not UTF-8, found reading CHUNK_BYTES at a time
    (a file without line ends is not read whole), as _decoded words it."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, line_start, pos = 1, 0, 0  # pos: bytes before `raw`; line_start: where `line` starts
    with _open(f) as fh:
        while raw := fh.read(CHUNK_BYTES):
            if pos == 0:
                raw = raw.removeprefix(BOM)
            pending = decoder.getstate()[0]
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as err:
                data, base = pending + raw, pos - len(pending)
                before = data[:err.start]
                if (nl := before.rfind(b"\n")) >= 0:
                    line, line_start = line + before.count(b"\n"), base + nl + 1
                at = base + err.start - line_start
                return CalibrationError(f"{f} line {line}: bytes that are not UTF-8 (at byte {at} of the "
                                        "line); convert the file to UTF-8")
            if (nl := raw.rfind(b"\n")) >= 0:
                line, line_start = line + raw.count(b"\n"), pos + nl + 1
            pos += len(raw)
    return CalibrationError(f"{f} line {line}: bytes that are not UTF-8 (a character cut short at the "
                            "end of the file); convert the file to UTF-8")


def _no_nul_start(f: Path) -> None:
    """Refuse a file whose first CHUNK_BYTES (decompressed) are NUL bytes and blanks: a sparse or
    binary file, which a line-based reader would read whole looking for a line end."""
    with _open(f) as fh:
        head = fh.read(CHUNK_BYTES)
    if b"\x00" in head and not head.replace(b"\x00", b"").strip():
        raise _nul_refusal(f, 0, len(head))


def _row_documents(f: Path, field: str, to_text: Callable[[dict], str]) -> Iterator[str]:
    """The text of each row of one json, jsonl, csv or parquet file (blank texts skipped)."""
    builder, n = file_format(f), 0
    try:
        if builder != "parquet":
            _no_nul_start(f)  # before any reader (or _json_field) looks for a line end in it
        for row in _read(builder, [f], **_options(f, builder, field)):
            if field not in row:
                raise CalibrationError(f"{f} has no field {field!r}; its fields: {', '.join(map(str, row))}. "
                                       "Choose one with --text-field")
            n += 1
            if (text := to_text(row)).strip():
                yield text
    except CalibrationError:
        raise
    except Exception as exc:  # pyarrow, pandas, json and decoding errors, as the readers raise them
        raise _fault(f, builder, exc) from None
    if n == 0:
        raise CalibrationError(f"{f} is empty")


def _options(f: Path, builder: str, field: str) -> dict[str, Any]:
    """The reader's options for file `f`: CSV cells as written, the list of records of a .json."""
    options = dict(_CSV, converters={field: str}) if builder == "csv" else {}  # "007" stays "007"
    if builder == "json" and (key := _json_field(f, field)):
        options.update(field=key, encoding="utf-8-sig")  # read whole with open(): drop a BOM
    return options


def _read(builder: str, files: list[Path], **options: Any) -> Iterator[dict[str, Any]]:
    """Rows of `files` as `datasets`' packaged `builder` reads them, streamed, in file order."""
    import datasets

    with tempfile.TemporaryDirectory(prefix="redundancy-calibration-") as cache, _quiet():
        # data_files are glob patterns: a name holding [, * or ? must match itself only
        yield from datasets.load_dataset(builder, data_files=[glob.escape(str(f.resolve())) for f in files],
                                         split="train", streaming=True, cache_dir=cache, **options)


@contextmanager
def _quiet() -> Iterator[None]:
    """Drop the readers' own error log lines while reading: their faults are re-raised as one
    CalibrationError, which the CLI prints as one line. (A filter per read, not a level: reads
    that interleave each remove their own.)"""
    names = ("datasets.packaged_modules.json.json", "datasets.packaged_modules.csv.csv")
    loggers, drop = [logging.getLogger(n) for n in names], logging.Filter("nothing")  # matches no name
    for lg in loggers:
        lg.addFilter(drop)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(drop)


def _open(f: Path) -> IO[bytes]:
    """`f`'s bytes, decompressed as its extension says (the same inference as datasets')."""
    import fsspec

    return fsspec.open(str(f), "rb", compression="infer").open()


def _json_field(f: Path, field: str) -> str | None:
    """For a .json file holding one object with a list of records: that list's key (the first
    list), which datasets reads with `field`. None for JSON lines (.jsonl by name, or a record per
    line) and for a list of records. Reads the first line only, unless the file is one object
    spread over several lines (which the reader then loads whole too)."""
    if not _base(f).endswith(".json"):
        return None
    with _open(f) as fh:
        first = fh.readline().removeprefix(BOM)
        while first and not first.strip():
            first = fh.readline()
        if not first.lstrip().startswith(b"{"):
            return None  # a list (datasets reads it), empty, or not JSON: the reader says which
        obj, more = _json(first), fh.read(1 << 16)
        if obj is None:  # one object over several lines
            obj, more = _json(first + more + fh.read()), b""
    if more.strip() or not isinstance(obj, dict) or field in obj:
        return None  # JSON lines (a record per line), or not JSON (located by _fault)
    key = next((k for k, v in obj.items() if isinstance(v, list)), None)
    if key is None:
        raise CalibrationError(f"{f}: expected a list of records (or an object holding one); "
                               f"found an object with fields {', '.join(map(str, obj))}")
    return key


def _json(text: bytes | str) -> Any:
    """`text` parsed, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _fault(f: Path, builder: str, exc: BaseException) -> CalibrationError:
    """One CalibrationError for a file a reader failed on: empty, not UTF-8 or not JSON at a line
    (found by reading it again, only now that it failed), else the reader's own words."""
    try:
        where = _locate(f, builder)
    except CalibrationError as err:
        where = str(err)
    except (OSError, EOFError) as err:  # gone, unreadable, or a broken compressed stream
        where = _unreadable(f, err)
    if where:
        return CalibrationError(where)
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    return CalibrationError(f"{f}: cannot be read as {builder} ({type(exc).__name__}: {text})")


def _decoded(f: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of `f`, decompressed and decoded as UTF-8 (a byte-order mark
    dropped). Raises CalibrationError at the first line that is not UTF-8."""
    with _open(f) as fh:
        for i, raw in enumerate(fh, 1):
            try:
                yield i, raw.removeprefix(BOM).decode("utf-8") if i == 1 else raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise CalibrationError(f"{f} line {i}: bytes that are not UTF-8 (at byte {err.start} of the "
                                       "line); convert the file to UTF-8") from None


def _locate(f: Path, builder: str) -> str:
    """What is wrong with `f` and on which line; "" when no line is at fault."""
    if builder == "json":
        return _json_fault(f)
    blank = True
    for _, line in _decoded(f):  # every line: a bad one may follow good ones
        blank = blank and not line.strip()
    return f"{f} is empty" if blank else ""


def _json_fault(f: Path) -> str:
    """The first line of a JSON file at fault. JSON lines (the first record parses on its own): the
    first line that does not; a document: where the parser stopped; "" when it parses."""
    doc: list[str] = []
    lines = None  # True: JSON lines; False: one document; None: not known before the first record
    for i, line in _decoded(f):
        if lines is not True:
            doc.append(line)
        if not line.strip():
            continue
        if lines is None:
            lines = _json(line) is not None
        if lines and _json(line) is None:
            return f"{f} line {i}: not JSON ({_where(_json_error(line))}); each line must be one JSON record"
    if lines is None:
        return f"{f} is empty"
    if not lines and (err := _json_error("".join(doc))):
        return f"{f} line {err.lineno}: not JSON ({_where(err)})"
    return ""


def _where(err: json.JSONDecodeError) -> str:
    """The parser's message with its column ("Invalid control character at column 5")."""
    return f"{err.msg.removesuffix(' at')} at column {err.colno}"


def _json_error(text: str) -> json.JSONDecodeError | None:
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return err
    return None
