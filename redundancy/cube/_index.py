"""The cube's index: one record per cell (`_cellio.make_record`), so that opening a cube reads a few
objects, not every cell.

Layout: `index/seg-<ns>-<id>.json` (records a writer added: each `write_cell` writes one, under a name
no other writer uses, so writers never conflict) and `index/base-<ns>-<id>.json` (segments merged).
Each record carries `seq`, its writer's time in ns: where two records name the same cell (a damaged
cell rescored, a cell recorded twice), the later one holds. Compaction, done by writers when segments
pile up and at the end of a run, writes a new base holding every record it read, then deletes what
it merged; a reader that finds a listed object gone (merged meanwhile) lists again (bounded).
Readers never write.

Costs: open reads the bases and segments (one base after a run); a record is ~1 KB of JSON.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterable

from ..errors import StoreError

PREFIX = "index/"
_TRIES = 8  # a reader lists again at most this often when compaction removes what it listed
_MIN_SEGMENTS = 64  # writers compact beyond this many segments (or 1/16 of the records: geometric)

Key = tuple[str, str, int, str]  # (kind, model, step, dataset)


def key_of(record: dict[str, Any]) -> Key:
    return record["kind"], record["model"], int(record["step"]), record["dataset"]


def _name(stem: str) -> str:
    return f"{PREFIX}{stem}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"


def add(backend: Any, records: list[dict[str, Any]]) -> None:
    """Record cells just written (one new segment)."""
    if records:
        seq = time.time_ns()
        backend.put(_name("seg"), json.dumps([{**r, "seq": seq} for r in records]).encode())


def read(backend: Any) -> dict[Key, dict[str, Any]]:
    """Every cell's latest record. Raises StoreError when index objects keep vanishing (a compaction
    racing on every try) or one is unreadable."""
    for _ in range(_TRIES):
        names = sorted(k for k in backend.list(PREFIX) if k.endswith(".json") and "/." not in k)
        blobs = backend.get_many(names)
        if all(b is not None for b in blobs):
            return _latest(_parse(n, b) for n, b in zip(names, blobs))
    raise StoreError(f"{backend.url}: its index kept changing while it was read ({_TRIES} tries); "
                     "run again when the writers are done")


def _parse(name: str, blob: bytes) -> list[dict[str, Any]]:
    try:
        return json.loads(blob)
    except ValueError:
        raise StoreError(f"{name} in the cube's index is unreadable; `redundancy check --repair STORE` "
                         "rebuilds the index from the cells") from None


def _latest(lists: Iterable[list[dict[str, Any]]]) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for records in lists:
        for r in records:
            k = key_of(r)
            if k not in out or r["seq"] >= out[k]["seq"]:
                out[k] = r
    return out


def compact(backend: Any, force: bool = False) -> bool:
    """Merge segments into one base when they pile up (or always, `force`); True if it merged.
    Safe with other writers: records are only ever added, and a merged object is deleted only after
    the base that holds its records exists."""
    names = sorted(k for k in backend.list(PREFIX) if k.endswith(".json") and "/." not in k)
    segments = [n for n in names if n.startswith(f"{PREFIX}seg-")]
    if not segments or (len(names) == 1 and not force):
        return False
    blobs = backend.get_many(names)
    if any(b is None for b in blobs):
        return False  # another writer is compacting: leave it to them
    latest = _latest(_parse(n, b) for n, b in zip(names, blobs))
    if not force and len(segments) <= max(_MIN_SEGMENTS, len(latest) // 16):
        return False
    backend.put(_name("base"), json.dumps(list(latest.values())).encode())
    for n in names:
        backend.delete(n)
    return True


def rebuild(backend: Any, records: list[dict[str, Any]]) -> None:
    """Replace the whole index by `records` (a repair from the cells themselves)."""
    old = [k for k in backend.list(PREFIX) if k.endswith(".json")]
    seq = time.time_ns()
    backend.put(_name("base"), json.dumps([{**r, "seq": seq} for r in records]).encode())
    for n in old:
        backend.delete(n)
