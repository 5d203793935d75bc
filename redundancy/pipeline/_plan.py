"""One planner and one prefetching checkpoint iterator, for every executor and for `order`.

`plan_cells` decides, from the cube, what a series still needs: the cells missing per checkpoint
(damaged cells reported and removed, cells of other weights refused: CubeStore.missing), which
checkpoints only copy an original's cells (byte-identical weights, duplicate_of), and which are done.
`prefetched` walks checkpoints with the next one's download running while the current one is
worked on, and frees each once the next is in.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from ..cube import CubeStore
from ..sources import Checkpoint, Series
from .settings import Fetcher


@dataclass
class Plan:
    """What a series still needs in a cube.

    todo: (checkpoint, calibration sets missing) to score, in series order.
    copies: (checkpoint, sets missing) whose weights equal an earlier checkpoint's (duplicate_of) that is
    scored already or in `todo`: their cells are copies of the original's.
    done: checkpoints with every cell in the cube.
    """

    todo: list[tuple[Checkpoint, list[str]]] = field(default_factory=list)
    copies: list[tuple[Checkpoint, list[str]]] = field(default_factory=list)
    done: list[Checkpoint] = field(default_factory=list)


def plan_cells(series: Series, store: CubeStore, names: Sequence[str], log: Callable[[str], None]) -> Plan:
    """The Plan of `series` against `store` for calibration sets `names`.

    Every checkpoint's missing cells are decided first, so an original's damaged cells are gone
    before a duplicate counts on them. The weights' digest (a local folder's bytes) is computed only
    where a stored cell must be compared with it. Raises StoreError (cells scored from other weights).
    """
    missing: dict[int, list[str]] = {}
    for c in series.checkpoints:
        stored = any(store.has_cell(series.model, c.step, d) for d in names)
        source = c.weights_source() if stored else ""
        missing[c.step] = store.missing(series.model, c.step, list(names), source=source, log=log)
    plan = Plan()
    scored = {c.step for c in series.checkpoints if missing[c.step]}
    for c in series.checkpoints:
        need = missing[c.step]
        if not need:
            plan.done.append(c)
        elif c.duplicate_of is not None and (c.duplicate_of in scored or _all_stored(store, series.model,
                                                                                     c.duplicate_of, need)):
            plan.copies.append((c, need))
        else:
            plan.todo.append((c, need))
    return plan


def _all_stored(store: CubeStore, model: str, step: int, names: Sequence[str]) -> bool:
    return all(store.has_cell(model, step, d) for d in names)


def prefetched(ckpts: Sequence[Checkpoint],
               fetcher: Fetcher | None) -> Iterator[tuple[Checkpoint, Checkpoint]]:
    """(checkpoint, its local form) for each of `ckpts`, in order. The fetch of checkpoint i + 1
    runs in a background thread while the caller works on checkpoint i; checkpoint i is released
    (`fetcher.release`: a hub download deleted unless kept) once i + 1 is in, so no download shares
    blobs with a deletion. Closing the iterator early releases what it holds."""
    fetcher = fetcher or Fetcher()
    if not ckpts:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetcher.fetch, ckpts[0])
        done = None
        try:
            for i, ckpt in enumerate(ckpts):
                ready = pending.result()  # the download of step i, started while step i-1 was worked on
                pending = None
                if done is not None:
                    fetcher.release(done)
                    done = None
                if i + 1 < len(ckpts):
                    pending = pool.submit(fetcher.fetch, ckpts[i + 1])
                yield ckpt, ready
                done = ready
        finally:
            if pending is not None:  # stopped early: let the download in flight finish, then free it
                try:
                    fetcher.release(pending.result())
                except Exception:  # noqa: BLE001 - its failure is not the caller's error
                    pass
            if done is not None:
                fetcher.release(done)
