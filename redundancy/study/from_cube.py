"""The study from a cube, what `redundancy study` calls: the checkpoint's drop orders read from the
cube's scores, held-out perplexity on every calibration set the cube was scored on, then the chain
(run_study) into `out/results.zarr`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .chain import run_study
from .settings import StudySettings

__all__ = ["study_from_cube", "heldout_from_cube", "orders_from_cube", "study_target", "StudyRun"]


def orders_from_cube(store: "str | Path", s: StudySettings, *, strategy: str = "one-shot") -> dict:
    """kind -> drop order (redundancy.orders.order_from_cube) for every kind `s.ks` asks plans of,
    from the cube's last scored step on calibration set `s.dataset`, ranked by `s.order_metric`.
    Raises what order_from_cube raises."""
    from ..cube import open_cube
    from ..drop import PLAN_KINDS
    from ..orders import order_from_cube

    cube = open_cube(store)
    return {kind: order_from_cube(cube, dataset=s.dataset, kind=kind, strategy=strategy,
                                  metric=s.order_metric) for kind in PLAN_KINDS if s.ks.get(kind)}


def heldout_from_cube(s: StudySettings, store: "str | Path") -> StudySettings:
    """`s` with held-out perplexity on every calibration set of the cube (its recorded source), on
    windows after those its scoring could draw (`scored` = the cube's n_samples, seq_len). Sets
    already named in `s.ppl_sets`, or `s.ppl_samples` = 0, leave `s` as it is.
    Raises StoreError (no cube at `store`, or one it cannot read)."""
    if s.ppl_samples == 0 or s.ppl_sets:
        return s
    from ..calibration._spec import spec_of
    from ..cube import CubeStore, open_cube

    cube = CubeStore(store)
    settings = cube.settings()
    labels = [str(d) for d in open_cube(store)["dataset"].values]
    return replace(s, ppl_sets={d: spec_of(d, cube.dataset_source(d)) for d in labels},
                   scored=(settings["n_samples"], settings["seq_len"]))


@dataclass(frozen=True)
class StudyRun:
    """Where a study's rows are: the results store, and the (model, step) they are filed under."""

    results: Path
    model: str
    step: int


def study_target(checkpoint: "str | Path", *, model: str | None = None,
                 step: int | None = None) -> tuple[str, int]:
    """(model, step) a checkpoint's study rows are filed under: `model` or the folder's name, `step`
    or the step `score local:` files the folder under (sources.read_step: checkpoint.json,
    trainer_state.json, a Megatron tracker file, the name). Raises SeriesError (a folder whose step
    nothing says: pass the step)."""
    from ..sources import read_step

    return (model or Path(checkpoint).resolve().name,
            read_step(checkpoint).step if step is None else step)


def study_from_cube(checkpoint: "str | Path", *, store: "str | Path", out: "str | Path",
                    settings: StudySettings | None = None, model: str | None = None, step: int | None = None,
                    log: Callable[[str], None] = print) -> StudyRun:
    """The study on `checkpoint` with its orders from the cube at `store` (one model; its last scored
    step, calibration set `settings.dataset`): drop plans, lm-eval, held-out perplexity on the cube's
    sets, timing, 4-bit quantization, every row into `out/results.zarr` (an existing study in `out`
    resumes). Returns the StudyRun: the results store and the (model, step) of its rows
    (`study_target`: the folder's name and the step `score local:` reads for it, unless given).

    Raises OutputError (`out` on an input, or holding something else), RedundancyError (an unusable
    device, lengths past the model's positions), SeriesError (no step to file the rows under),
    StoreError and NotFoundError (from the cube), and what run_study raises."""
    from .._atomic import check_output
    from .._device import check_device
    from ..cube._backend import is_url
    from .chain import check_settings

    checkpoint, s = Path(checkpoint), settings or StudySettings()
    check_device(s.device)
    model, step = study_target(checkpoint, model=model, step=step)  # before any work: an unread name fails
    local_store = [] if is_url(str(store)) else [Path(store)]
    out = check_output(out, [checkpoint] + local_store, overwrite=True, kind="study")  # a study resumes
    s = heldout_from_cube(s, store)
    s = check_settings(checkpoint, s)  # before any work: lengths against the model's positions
    orders = orders_from_cube(store, s)
    return StudyRun(run_study(checkpoint, orders, out, s, model=model, step=step, log=log), model, step)
