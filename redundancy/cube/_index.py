"""The cube's index: one record per cell (`_cellio.make_record`), so that opening a cube reads a few
objects, not every cell.

Layout: `index/seg-<ns>-<id>-<xxh3>.json` (records a writer added: each `write_cell` writes one, under a name
no other writer uses, so writers never conflict) and `index/base-<ns>-<id>-<xxh3>.parquet` (segments merged,
one row per cell, one column per field: read whole in tens of milliseconds at 50,000 cells).
Each record carries `seq`, its writer's time in ns: where two records name the same cell (a damaged
cell rescored, a cell recorded twice), the later one holds. Compaction, done by writers when segments
pile up and at the end of a run, writes a new base holding every record it read, then deletes what
it merged; a reader that finds a listed object gone (merged meanwhile) lists again (bounded).
Each name ends with its object's xxh3 digest, which readers check. Readers never write.

Costs: open reads the bases and segments (one base after a run).
"""
from __future__ import annotations

import io
import json
import re
import time
import uuid
from typing import Any

import pandas as pd

from ..errors import StoreError
from ._cellio import digest

PREFIX = "index/"
_TRIES = 8  # a reader lists again at most this often when compaction removes what it listed
_MIN_SEGMENTS = 64  # writers compact beyond this many segments (or 1/16 of the records: geometric)

Key = tuple[str, str, int, str]  # (kind, model, step, dataset)


def key_of(record: dict[str, Any]) -> Key:
    return record["kind"], record["model"], int(record["step"]), record["dataset"]


_OBJECT = re.compile(r"index/(seg|base)-\d{20}-[0-9a-f]{8}-(?P<digest>[0-9a-f]{16})\.(json|parquet)")


def _put(backend: Any, stem: str, suffix: str, data: bytes) -> None:
    """An index object under a name no other writer uses, ending with its own xxh3 digest: a reader
    refuses an object whose bytes no longer match its name."""
    backend.put(f"{PREFIX}{stem}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{digest(data)}.{suffix}", data)


def add(backend: Any, records: list[dict[str, Any]]) -> None:
    """Record cells just written (one new segment)."""
    if records:
        seq = time.time_ns()
        _put(backend, "seg", "json", json.dumps([{**r, "seq": seq} for r in records]).encode())


def _names(backend: Any) -> list[str]:
    """The index's objects (anything else under index/ is no part of it: `strays` names those)."""
    return sorted(k for k in backend.list(PREFIX) if _OBJECT.fullmatch(k))


def strays(backend: Any) -> list[str]:
    """Objects under index/ that are not index objects (a writer's temporary files excluded)."""
    return sorted(k for k in backend.list(PREFIX) if not _OBJECT.fullmatch(k) and "/." not in k)


def read_frame(backend: Any) -> pd.DataFrame:
    """Every cell's latest record as one row (columns: `COLUMNS`, `p/<provenance>`, `a/<array>/...`).
    Raises StoreError when index objects keep vanishing (a compaction racing on every try) or one is
    unreadable."""
    for _ in range(_TRIES):
        names = _names(backend)
        blobs = backend.get_many(names)
        if all(b is not None for b in blobs):
            return _latest([_parse(n, b) for n, b in zip(names, blobs)])
    raise StoreError(f"{backend.url}: its index kept changing while it was read ({_TRIES} tries); "
                     "run again when the writers are done")


class Records:
    """The index as read: its frame (one row per cell), and each cell's record on demand by key."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._by_key: dict[Key, int] | None = None
        self._digests: Any = None
        self._added: dict[Key, dict[str, Any]] = {}

    @property
    def _rows(self) -> dict[Key, int]:
        if self._by_key is None:  # built on first use: opening a cube never needs it
            keys = zip(self.frame["kind"], self.frame["model"], self.frame["step"], self.frame["dataset"])
            self._by_key = {(k, m, int(s), d): i for i, (k, m, s, d) in enumerate(keys)}
        return self._by_key

    def get(self, key: Key) -> dict[str, Any] | None:
        if key in self._added:
            return self._added[key]
        i = self._rows.get(key)
        return None if i is None else to_records(self.frame.iloc[i:i + 1])[0]

    def complete_digest(self, key: Key) -> str | None:
        """The digest of the cell's `.complete.json` the index recorded (None: not recorded)."""
        if key in self._added:
            return self._added[key]["complete"]
        i = self._rows.get(key)
        if i is None:
            return None
        if self._digests is None:
            self._digests = self.frame["complete"].to_numpy(dtype=object)
        return self._digests[i]

    def __contains__(self, key: object) -> bool:
        return key in self._added or key in self._rows

    def keys(self) -> set[Key]:
        return set(self._rows) | set(self._added)

    def __iter__(self):
        return iter(sorted(self.keys(), key=str))

    def __len__(self) -> int:
        return len(self.keys())

    def remember(self, record: dict[str, Any]) -> None:
        """A record this process just added (so it need not read the index again)."""
        self._added[key_of(record)] = record


def read(backend: Any) -> Records:
    """Every cell's latest record."""
    return Records(read_frame(backend))


def _parse(name: str, blob: bytes) -> pd.DataFrame | list[dict[str, Any]]:
    """A base (a frame) or a segment (its records). Raises StoreError for an object whose bytes are not
    the ones its name records, or that does not read as what it should be."""
    if digest(blob) != _OBJECT.fullmatch(name).group("digest"):
        raise StoreError(f"{name} in the cube's index changed since it was written; `redundancy check "
                         "--repair STORE` rebuilds the index from the cells")
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(io.BytesIO(blob))
            if not set(COLUMNS) <= set(frame.columns):
                raise ValueError("columns missing")
            return frame
        records = json.loads(blob)
        if not isinstance(records, list) or \
                not all(isinstance(r, dict) and _REQUIRED <= set(r) for r in records):
            raise ValueError("not a list of records")
        return records
    except Exception:  # noqa: BLE001 - whatever pyarrow or json raise: the object is unreadable
        raise StoreError(f"{name} in the cube's index is unreadable; `redundancy check --repair STORE` "
                         "rebuilds the index from the cells") from None


_REQUIRED = {"kind", "model", "step", "dataset", "complete", "provenance", "arrays", "seq"}


def _latest(parts: list[pd.DataFrame | list[dict[str, Any]]]) -> pd.DataFrame:
    """Bases and segments -> one frame, the latest record of each cell (segments' records are made
    into one frame together: a frame per segment costs more than its records)."""
    records = [r for p in parts if isinstance(p, list) for r in p]
    frames = [p for p in parts if not isinstance(p, list)] + ([to_frame(records)] if records else [])
    frame = _normalized(pd.concat(frames, ignore_index=True)) if frames else to_frame([])
    frame = frame.sort_values("seq", kind="stable").drop_duplicates(list(COLUMNS[:4]), keep="last")
    return frame.reset_index(drop=True)


COLUMNS = ("kind", "model", "step", "dataset", "seq", "complete", "tokens", "orders")
_ARRAY_FIELDS = ("layers", "modules", "samples", "dtype", "meta", "chunk")


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records -> columns: labels, `p/<name>` per provenance string, `a/<array>/<field>` per value
    array (shape as three integers, dtype, digests; "" where a cell lacks the array), `orders` (JSON)."""
    rows = []
    for r in records:
        row = {"kind": r["kind"], "model": r["model"], "step": int(r["step"]), "dataset": r["dataset"],
               "seq": int(r.get("seq", 0)), "complete": r["complete"],
               "tokens": float("nan") if r.get("tokens") is None else float(r["tokens"]),
               "orders": json.dumps(r["orders"]) if r.get("orders") is not None else ""}
        row.update({f"p/{k}": str(v) for k, v in r["provenance"].items()})
        for name, a in r["arrays"].items():
            row.update({f"a/{name}/layers": a["shape"][0], f"a/{name}/modules": a["shape"][1],
                        f"a/{name}/samples": a["shape"][2], f"a/{name}/dtype": a["dtype"],
                        f"a/{name}/meta": a["meta"], f"a/{name}/chunk": a["chunk"] or ""})
        rows.append(row)
    return _normalized(pd.DataFrame(rows, columns=None if rows else list(COLUMNS)))


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    """"" and 0 where a row lacks a field (frames of records with other arrays were joined)."""
    for col in frame.columns:
        if col.startswith("p/") or col.endswith(("/dtype", "/meta", "/chunk")) or col == "orders":
            frame[col] = frame[col].fillna("")
        elif col.endswith(("/layers", "/modules", "/samples")):
            frame[col] = frame[col].fillna(0).astype("int64")
    return frame


def array_names(frame: pd.DataFrame) -> list[str]:
    """The value arrays the records hold, in the order they first appear."""
    return list(dict.fromkeys(c.split("/")[1] for c in frame.columns
                              if c.startswith("a/") and c.endswith("/meta")))


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows -> records (`_cellio.make_record`'s form)."""
    arrays, prov = array_names(frame), [c for c in frame.columns if c.startswith("p/")]
    out = []
    for row in frame.to_dict("records"):
        r = {k: row[k] for k in COLUMNS}
        r["tokens"] = None if r["tokens"] != r["tokens"] else r["tokens"]
        r["orders"] = json.loads(r["orders"]) if r["orders"] else None
        r["provenance"] = {c[2:]: row[c] for c in prov if row[c] != ""}
        r["arrays"] = {a: {"name": a, "shape": [row[f"a/{a}/{f}"] for f in _ARRAY_FIELDS[:3]],
                           "dtype": row[f"a/{a}/dtype"], "meta": row[f"a/{a}/meta"],
                           "chunk": row[f"a/{a}/chunk"] or None}
                       for a in arrays if row[f"a/{a}/meta"]}
        out.append(r)
    return out


def _write_base(backend: Any, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    _put(backend, "base", "parquet", buffer.getvalue())


def compact(backend: Any, force: bool = False) -> bool:
    """Merge segments into one base when they pile up (or always, `force`); True if it merged.
    Safe with other writers: records are only ever added, and a merged object is deleted only after
    the base that holds its records exists."""
    names = _names(backend)
    segments = [n for n in names if n.startswith(f"{PREFIX}seg-")]
    if not segments or (len(names) == 1 and not force):
        return False
    blobs = backend.get_many(names)
    if any(b is None for b in blobs):
        return False  # another writer is compacting: leave it to them
    latest = _latest([_parse(n, b) for n, b in zip(names, blobs)])
    if not force and len(segments) <= max(_MIN_SEGMENTS, len(latest) // 16):
        return False
    _write_base(backend, latest)
    for n in names:
        backend.delete(n)
    return True


def rebuild(backend: Any, records: list[dict[str, Any]]) -> None:
    """Replace the whole index by `records` (a repair from the cells themselves)."""
    old = _names(backend)
    seq = time.time_ns()
    _write_base(backend, to_frame([{**r, "seq": seq} for r in records]))
    for n in old:
        backend.delete(n)
