"""What `-d` accepts: a registered name, a local file or folder, or `hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]`.

Each resolves to a CalibrationSet with a stable short name (the cube's `dataset` label) and the
full source it reads (stored with every cell: one store refuses two sources under one name). A
local file's source ends with a digest of its bytes ("file:PATH:FIELD@xxh3:..."): a file edited
between two runs is another source (redundancy/_digest.py hashes it once, then while its size and
times hold). Documents are read when packed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from ..errors import CalibrationError


def _short(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def parse_hf(spec: str) -> tuple[str, str | None, str, str | None]:
    """"hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]" -> (repo, config, split, field). Three parts after the
    repo are CONFIG:SPLIT:FIELD; two are CONFIG:SPLIT; for a field without a config leave CONFIG
    empty: hf:ORG/NAME::SPLIT:FIELD."""
    parts = spec.removeprefix("hf:").split(":")
    if len(parts) < 2 or len(parts) > 4 or "/" not in parts[0] or not all(parts[i] for i in (0, -1)):
        raise CalibrationError(f"{spec!r}: write hf:ORG/NAME:SPLIT, hf:ORG/NAME:CONFIG:SPLIT or "
                               "hf:ORG/NAME:CONFIG:SPLIT:FIELD (CONFIG may be empty)")
    repo, *rest = parts
    if len(rest) == 1:
        return repo, None, rest[0], None
    if len(rest) == 2:
        return repo, rest[0] or None, rest[1], None
    return repo, rest[0] or None, rest[1], rest[2]


def resolve(spec: str, *, text_field: str = "text", registry: Any = None,
            row_text: Callable[[list[str]], Callable[[dict], str]] | None = None):
    """The CalibrationSet `spec` names (see the module docstring). Raises CalibrationError (a malformed
    hf: spec, a missing or empty file or folder, an unreadable file); NotFoundError (an unknown name)."""
    from . import CALIBRATION_SETS, CalibrationSet, _row_text, offline_names
    from ._files import SUFFIXES, data_files, file_documents
    from ._hub import hub_documents

    registry = registry or CALIBRATION_SETS
    if spec in registry:
        return registry.get(spec)
    if spec.startswith("hf:"):
        repo, config, split, field = parse_hf(spec)
        fields = [field or text_field]
        name = _short("-".join(p for p in (repo.split("/")[-1], config, split) if p))
        return CalibrationSet(name, f"{repo} {split} split from the hub", lambda: hub_documents(
            repo, config=config, split=split, to_text=_row_text(fields), builtin=offline_names(),
            field=fields[0]), False, source=f"hf:{repo}:{config or ''}:{split}:{fields[0]}")
    path = Path(spec).expanduser()
    if path.exists() or path.suffix in SUFFIXES or "/" in spec or "\\" in spec:
        files = data_files(path)  # a missing path or an empty folder fails here, before any work
        name = _short(path.resolve().name)  # "notes.jsonl", or the folder's name
        return CalibrationSet(name, f"local data {path}",
                              lambda: file_documents(path, text_field, _row_text([text_field])),
                              True, source=f"file:{path.resolve()}:{text_field}@{_text_digest(files)}")
    return registry.get(spec)  # "did you mean" among the registered names


def _text_digest(files: list[Path]) -> str:
    from .._digest import content_digest

    try:
        return content_digest(files)
    except OSError as exc:
        raise CalibrationError(f"cannot read {exc.filename or files[0]}: {exc.strerror or exc}") from None


def same_place(a: str, b: str) -> bool:
    """True when two recorded sources read the same file or folder (their contents may differ)."""
    return a.partition("@")[0] == b.partition("@")[0]


def spec_of(label: str, source: str, *, registry: Any = None) -> tuple[str, str]:
    """(spec, text_field) that reads again the set a cube stores under `label`, from the
    `calibration_source` its cells record ("file:PATH:FIELD", "hf:...", "builtin:..." or "")."""
    from . import CALIBRATION_SETS

    if label in (registry or CALIBRATION_SETS):
        return label, "text"
    if source.startswith("file:"):  # "file:PATH:FIELD", and "@DIGEST" since files record their bytes
        path, _, field = source.removeprefix("file:").partition("@")[0].rpartition(":")
        return path, field
    if source.startswith("hf:"):
        return source, parse_hf(source)[3] or "text"
    raise CalibrationError(f"the cube's set {label!r} is neither registered nor recorded with its source "
                           f"({source or 'none'}); give the held-out sets with --ppl-set")
