"""`--executor ray`: each (model, step) is a Ray task on one GPU (or one CPU); the driver writes the cells.

A task runs the single-process `score_series` on a one-checkpoint series into a private temporary
store on its own node, and returns the cells it wrote as loaded xarray Datasets. The driver writes
each into the cube (`CubeStore.write_cell`: whole, renamed into place) as its task finishes, so the
workers need not see the driver's disk: nodes without a shared filesystem fill the same cube. A task
retried after its worker died scores its checkpoint again (what the dead try wrote died with it);
the cells of tasks that finished are in the cube already.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import xarray as xr

from ..cube import CubeStore
from ..errors import RedundancyError
from ..sources import Checkpoint, Series
from ._plan import plan_cells
from .score import check_sources, score_series
from .settings import Events, Fetcher, ScoreSettings

_PRIVATE = f"redundancy-ray-{socket.gethostname()}-"  # + pid-: a task's private store's folder
# a task: its checkpoints (one, and its byte-identical duplicates), and the stored cells of their
# originals that the duplicates are copied from
Task = tuple[list[Checkpoint], list[xr.Dataset]]


@contextmanager
def ray_cluster(*, num_workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """The `ray` module, initialised for the block: an already initialised Ray is used as it is;
    else join `address` (or $RAY_ADDRESS), or start a local cluster of `num_workers` CPUs (default all),
    shut down after. Raises RedundancyError when Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise RedundancyError("--executor ray needs Ray: pip install 'redundancy[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS")  # `ray start` clusters and `ray job submit` set it
    size = {"address": address} if address else {"num_cpus": num_workers or os.cpu_count()}
    ray.init(include_dashboard=False, log_to_driver=False, **size)
    try:
        yield ray
    finally:
        ray.shutdown()


def _score_task(series: Series, settings: ScoreSettings, fetcher: Fetcher | None,
                seeds: list[xr.Dataset]) -> list[xr.Dataset]:
    """The Ray task: score `series` (one checkpoint and its duplicates) into a temporary store on
    this node, removed after. `seeds`, cells from the driver's cube, go in first, so the duplicates
    of an original scored before are copied from them. Returns the cells scored or copied here,
    loaded into memory (one Dataset per (step, dataset)); the seeds are not among them."""
    with _private_folder() as tmp:
        store = CubeStore.open(Path(tmp) / "cube.zarr", settings.calibration())
        for cell in seeds:
            store.write_cell(cell)
        written = score_series(series, store, settings, fetcher=fetcher).written
        return [store.read_cell(series.model, step, dataset) for step, dataset in written]


def _private_folder() -> tempfile.TemporaryDirectory:
    """A temporary folder named for this host and process. First removes those of this host's
    processes that are gone: a worker killed (OOM, SIGKILL) never removed its own, nothing else would."""
    for old in Path(tempfile.gettempdir()).glob(f"{_PRIVATE}*"):
        pid = old.name[len(_PRIVATE):].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{_PRIVATE}{os.getpid()}-")


def _alive(pid: int) -> bool:
    """Whether a process of this id runs on this host (a reused id counts: its folder is kept)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _plan(series: Series, store: CubeStore, names: list[str],
          log: Callable[[str], None]) -> tuple[list[Task], list[Checkpoint]]:
    """(the tasks; the checkpoints done already), from the one planner (`_plan.plan_cells`, as
    `score_series` plans). A duplicate rides in its original's task, where score_series copies the
    original's cells instead of scoring the same weights again; a duplicate of an original stored
    already gets its own task, seeded with the original's cells (a task's store starts empty)."""
    plan = plan_cells(series, store, names, log)
    tasks: dict[int, tuple[list[Checkpoint], dict]] = {c.step: ([c], {}) for c, _ in plan.todo}
    for c, need in plan.copies:
        ckpts, seeds = tasks.setdefault(c.duplicate_of if c.duplicate_of in tasks else c.step, ([], {}))
        ckpts.append(c)
        seeds.update({(c.duplicate_of, d): store.read_cell(series.model, c.duplicate_of, d)
                      for d in need if store.has_cell(series.model, c.duplicate_of, d)})
    return [(ckpts, list(seeds.values())) for ckpts, seeds in tasks.values()], plan.done


def _remote(ray: Any, settings: ScoreSettings, max_retries: int) -> tuple[Any, ScoreSettings]:
    """The Ray task with its resources (one GPU or one CPU), and the settings it runs with."""
    gpu = settings.device.startswith("cuda")
    remote = ray.remote(_score_task).options(num_cpus=1, num_gpus=int(gpu), max_retries=max_retries)
    # Ray gives each GPU task its own CUDA_VISIBLE_DEVICES: inside it, "cuda" is the GPU it was given
    return remote, dataclasses.replace(settings, device="cuda") if gpu else settings


def score_series_ray(series: Series, store_path: str | Path, settings: ScoreSettings, *,
                     events: Events | None = None, fetcher: Fetcher | None = None,
                     num_workers: int | None = None, address: str | None = None,
                     max_retries: int = 2) -> Events:
    """`score_series` with each checkpoint a Ray task; at most `num_workers` run at once (default:
    as many as the cluster fits). A task whose worker dies is retried up to `max_retries` times.
    The tasks' nodes need the checkpoints (or the fetcher's source) and the calibration sets, not
    the store: this process writes every cell, as its task finishes. `events.checkpoint` hears
    "scoring" as a task is submitted and "scored" once its cells are written; `events.written`
    gets the (step, dataset) of each cell written.

    Raises StoreError (a bad store, other calibration settings or sources, cells of other weights)
    before Ray starts; a task's RedundancyError as it is; RedundancyError when a worker died on
    every try (the cells of the tasks that finished are kept: a rerun resumes)."""
    ev = events or Events()
    store = CubeStore.open(store_path, settings.calibration())  # a bad store fails here, not in N workers
    check_sources(store, settings)  # here: a task's own store is empty, it has nothing to compare
    tasks, done = _plan(series, store, list(settings.sets()), ev.log)
    for c in done:
        ev.checkpoint(c, "done already")
    if not tasks:
        return ev
    with ray_cluster(num_workers=num_workers, address=address) as ray:
        remote, task_settings = _remote(ray, settings, max_retries)

        def submit(task: Task) -> Any:
            ckpts, seeds = task
            for c in ckpts:
                ev.checkpoint(c, "scoring")
            one = dataclasses.replace(series, checkpoints=ckpts)
            return remote.remote(one, task_settings, fetcher, seeds)

        limit = num_workers or len(tasks)  # tasks in flight at once
        with closing(_as_completed(ray, submit, tasks, limit=limit, tries=max_retries + 1)) as finished:
            for (ckpts, _), cells in finished:
                for cell in cells:  # False: a concurrent run wrote the cell first (kept as it was)
                    if store.write_cell(cell):
                        ev.written.append((int(cell["step"].item()), str(cell["dataset"].item())))
                for c in ckpts:
                    ev.checkpoint(c, "scored")
    return ev


def _as_completed(ray: Any, submit: Any, tasks: list[Task], limit: int,
                  tries: int) -> Iterator[tuple[Task, list[xr.Dataset]]]:
    """Keep `limit` tasks in flight (a ray.wait loop) and yield each, with the cells it returned,
    as it finishes."""
    queue, running = list(tasks), {}
    try:
        while queue or running:
            while queue and len(running) < limit:
                task = queue.pop(0)
                running[submit(task)] = task
            (ref,), _ = ray.wait(list(running), num_returns=1)
            task = running.pop(ref)
            yield task, _get(ray, ref, task[0][0].step, tries)
    finally:
        for ref in running:  # after a failure: stop the others, which matters on a cluster we did not start
            ray.cancel(ref, force=True)


def _get(ray: Any, ref: Any, step: int, tries: int) -> list[xr.Dataset]:
    """A finished task's cells; its failure becomes the toolkit's own one-line error where it can."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, RedundancyError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayError as exc:  # the worker process died on every try
        raise RedundancyError(f"the Ray worker scoring step {step} died on all {tries} tries "
                              f"({type(exc).__name__}); the steps that finished are in the store: "
                              "run again to resume") from exc
