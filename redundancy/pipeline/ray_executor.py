"""`--executor ray`: each (model, step) is a Ray task on one GPU (or one CPU) writing its own cells.

A task opens the store by path and runs the single-process `score_series` on a one-checkpoint
series. Cells are renamed into place whole, so concurrent tasks never collide, and a task retried
after its worker died skips the cells its dead try had already written.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from ..cube import CubeStore
from ..errors import RedundancyError
from ..sources import Checkpoint, Series
from .score import score_series
from .settings import Events, Fetcher, ScoreSettings

Task = tuple[list[Checkpoint], list[tuple[int, str]]]  # checkpoints, and the (step, dataset) cells they lack


@contextmanager
def ray_cluster(num_workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """The `ray` module, initialised for the block: an already initialised Ray is used as it is;
    else join `address`, or start a local cluster of `num_workers` CPUs (default all), shut down after."""
    try:
        import ray
    except ImportError:
        raise RedundancyError("--executor ray needs Ray: pip install 'redundancy[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    size = {"address": address} if address else {"num_cpus": num_workers or os.cpu_count()}
    ray.init(include_dashboard=False, log_to_driver=False, **size)
    try:
        yield ray
    finally:
        ray.shutdown()


def _score_task(series: Series, ckpts: list[Checkpoint], store_path: str, settings: ScoreSettings,
                fetcher: Fetcher | None) -> None:
    """The Ray task: score one checkpoint (and its byte-identical duplicates) into the store."""
    store = CubeStore.open(store_path, settings.calibration())
    score_series(dataclasses.replace(series, checkpoints=ckpts), store, settings, fetcher=fetcher)


def _plan(series: Series, store: CubeStore, datasets: tuple[str, ...]) -> tuple[list[Task], list[Checkpoint]]:
    """(the tasks; the checkpoints done already). A duplicate rides in its original's task, where
    score_series copies the original's cells instead of scoring the same weights again."""
    steps, tasks, done = {c.step for c in series.checkpoints}, {}, []
    for c in series.checkpoints:
        missing = [(c.step, d) for d in datasets if not store.has_cell(series.model, c.step, d)]
        if not missing:
            done.append(c)
            continue
        ckpts, cells = tasks.setdefault(c.duplicate_of if c.duplicate_of in steps else c.step, ([], []))
        ckpts.append(c)
        cells += missing
    return list(tasks.values()), done


def _remote(ray: Any, settings: ScoreSettings, max_retries: int) -> tuple[Any, ScoreSettings]:
    """The Ray task with its resources (one GPU or one CPU), and the settings it runs with."""
    gpu = settings.device.startswith("cuda")
    remote = ray.remote(_score_task).options(num_cpus=1, num_gpus=int(gpu), max_retries=max_retries)
    # Ray gives each GPU task its own CUDA_VISIBLE_DEVICES: inside it, "cuda" is the GPU it was given
    return remote, dataclasses.replace(settings, device="cuda") if gpu else settings


def score_series_ray(series: Series, store_path: str | Path, settings: ScoreSettings,
                     events: Events | None = None, *, fetcher: Fetcher | None = None,
                     num_workers: int | None = None, address: str | None = None,
                     max_retries: int = 2) -> Events:
    """`score_series` with each checkpoint a Ray task; at most `num_workers` run at once (default:
    as many as the cluster fits). A task whose worker dies is retried up to `max_retries` times.
    `events.checkpoint` hears "scoring" as a task is submitted and "scored" as it finishes."""
    ev = events or Events()
    store = CubeStore.open(store_path, settings.calibration())  # a bad store fails here, not in N workers
    tasks, done = _plan(series, store, tuple(settings.sets()))
    for c in done:
        ev.checkpoint(c, "done already")
    if not tasks:
        return ev
    with ray_cluster(num_workers, address) as ray:
        remote, task_settings = _remote(ray, settings, max_retries)

        def submit(ckpts: list[Checkpoint]) -> Any:
            for c in ckpts:
                ev.checkpoint(c, "scoring")
            return remote.remote(series, ckpts, str(store.path), task_settings, fetcher)

        limit = num_workers or len(tasks)  # tasks in flight at once
        with closing(_as_completed(ray, submit, tasks, limit, max_retries + 1)) as finished:
            for ckpts, missing in finished:
                # counted from the store: a retried task does not know what its dead try wrote
                ev.written += [(s, d) for s, d in missing if store.has_cell(series.model, s, d)]
                for c in ckpts:
                    ev.checkpoint(c, "scored")
    return ev


def _as_completed(ray: Any, submit: Any, tasks: list[Task], limit: int, tries: int) -> Iterator[Task]:
    """Keep `limit` tasks in flight (a ray.wait loop) and yield each as it finishes."""
    queue, running = list(tasks), {}
    try:
        while queue or running:
            while queue and len(running) < limit:
                task = queue.pop(0)
                running[submit(task[0])] = task
            (ref,), _ = ray.wait(list(running), num_returns=1)
            task = running.pop(ref)
            _get(ray, ref, task[0][0].step, tries)
            yield task
    finally:
        for ref in running:  # after a failure: stop the others, which matters on a cluster we did not start
            ray.cancel(ref, force=True)


def _get(ray: Any, ref: Any, step: int, tries: int) -> None:
    """Wait for a finished task; its failure becomes the toolkit's own one-line error where it can."""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, RedundancyError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayError as exc:  # the worker process died on every try
        raise RedundancyError(f"the Ray worker scoring step {step} died on all {tries} tries "
                              f"({type(exc).__name__}); the cells it wrote are kept: "
                              "run again to resume") from exc
