"""`redundancy check` for a cube: every cell read whole and compared with what its writer recorded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import StoreError
from . import _index
from ._store import KINDS, CubeStore


@dataclass
class CubeReport:
    """What `check_cube` found. `damaged`: one line per cell read as not what was written (the next
    `score` rescores it, `repair` removes it); `foreign`: objects under cells/ or orders/ that are no
    cell (open_cube ignores them); `notes`: what needs no rescoring (a sound cell not
    yet indexed, a format-1 cube); `repaired`: the counts `CubeStore.repair` returned, when asked."""

    sound: int = 0
    damaged: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: dict[str, int] | None = None


def check_cube(location: str | Path, *, repair: bool = False,
               log: Callable[[str], None] = lambda msg: None) -> CubeReport:
    """Verify a cube without changing it (every file's xxh3 digest, the labels each cell records
    against its place, the index against the cells, objects that belong to no cell). With `repair`:
    convert a format-1 cube, remove damaged cells and rebuild the index from the sound cells
    (`CubeStore.repair`), then verify again. Raises StoreError where `location` is not a cube."""
    store = CubeStore.open(location)
    report = CubeReport()
    if repair:
        report.repaired = store.repair(log=log)
        store = CubeStore.open(location)
    if store.format() == 1:
        report.notes.append("format 1 (written before checksums and the index): `check --repair` converts "
                            "it once, every value kept")
    records = None
    if store.format() == 2:
        try:
            records = store.records(refresh=True)
        except StoreError as exc:  # the cells are still checked, against themselves
            report.damaged.append(f"index: {exc}")
            records = store._records = _index.Records(_index.to_frame([]))
        report.foreign += [f"{k}: not part of the index (open_cube ignores it; remove it)"
                           for k in _index.strays(store.backend)]
    seen = set()
    for kind in KINDS:
        _check_kind(store, kind=kind, records=records, seen=seen, report=report)
    for key in sorted((records.keys() if records is not None else set()) - seen, key=str):
        if not any(line.startswith(store.prefix(key[1], key[2], key[3], kind=key[0]) + ":")
                   for line in report.damaged):
            where = store.prefix(key[1], key[2], key[3], kind=key[0])
            report.damaged.append(f"{where}: missing (recorded in the index; the next score rescores it)")
    return report


def _check_kind(store: CubeStore, kind: str, records: Any, seen: set, report: CubeReport) -> None:
    """Verify the cells of one kind, adding to `report` and to `seen` the labels of sound cells."""
    listing = store.backend.list(f"{kind}/")  # once: on object storage a listing is a request per 1,000
    per_cell: dict[str, dict[str, int]] = {}
    for key, size in listing.items():
        per_cell.setdefault("/".join(key.split("/")[:4]), {})[key] = size
    for prefix in store._listed(kind, listing):
        labels = store._labels(prefix)
        if what := store.damage(prefix, full=True, listing=per_cell.get(prefix, {})):
            report.damaged.append(f"{prefix}: {what}")
            continue
        report.sound += 1
        if store.format() == 2:
            seen.add(labels)
            if labels not in records:
                report.notes.append(f"{prefix}: sound, not yet in the index (open_cube does not show it; "
                                    "the next score or `check --repair` records it)")
    for prefix in store.half_written(kind, listing=listing):
        report.notes.append(f"{prefix}: half-written by a writer that was killed; never read, the next "
                            "score writes it whole")
    for prefix in store.foreign(kind, listing=listing):
        report.foreign.append(f"{prefix}: not a cell of this cube (open_cube ignores it; remove it)")
