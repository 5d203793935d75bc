"""lm-eval on an in-memory model: the study's task preset, the built-in offline tasks, or any task names."""
from __future__ import annotations

import io
import logging
from collections import defaultdict
from contextlib import contextmanager, redirect_stderr
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from .._data import DATA_DIR, load_yaml
from .._registry import Registry
from ..errors import NotFoundError, RedundancyError

if TYPE_CHECKING:
    from torch import nn

TASKS_DIR = DATA_DIR / "tasks"


def _eval_presets() -> Registry[dict[str, dict[str, Any]]]:
    presets: Registry[dict[str, dict[str, Any]]] = Registry("evaluation preset")
    for name, tasks in load_yaml("tasks/presets.yaml").items():
        presets.register(name, tasks)
    return presets


# The evaluation presets (the CLI's --preset / --eval choices): name -> task -> {shots, metric}, read
# from redundancy/data/tasks/presets.yaml.
EVAL_PRESETS = _eval_presets()
LOG = logging.getLogger("redundancy.lm_eval")  # lm-eval's warnings and progress bars, at debug level


class _ToLog(logging.Handler):
    """Re-logs lm-eval's records at debug level under LOG."""

    def emit(self, record: logging.LogRecord) -> None:
        LOG.debug("%s: %s", record.name, record.getMessage())


class _LinesToLog(io.TextIOBase):
    """A stream whose lines (progress bars redraw with \r) go to LOG at debug level."""

    def write(self, text: str) -> int:
        for line in text.replace("\r", "\n").splitlines():
            if line.strip():
                LOG.debug("%s", line.rstrip())
        return len(text)


@contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """While lm-eval runs: its log records (the per-model 'pretrained model kwarg is not of type
    str', 'Passed an already-initialized model', 'Overwriting default num_fewshot') and whatever it
    writes to stderr (tqdm's progress bars) go to the `redundancy.lm_eval` logger at debug level
    (the CLI's --verbose shows them); the toolkit's own progress stays where it was."""
    logger = logging.getLogger("lm_eval")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [_ToLog()], False
    logger.setLevel(logging.DEBUG if LOG.isEnabledFor(logging.DEBUG) else logging.INFO)
    try:
        with redirect_stderr(_LinesToLog()):
            yield
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def preset_tasks(preset: str) -> dict[str, dict[str, Any]]:
    """task -> {shots, metric} for a preset in redundancy/data/tasks/presets.yaml (a copy: the
    caller may add to it). Raises NotFoundError for an unknown preset (with the closest name)."""
    return {task: dict(spec) for task, spec in EVAL_PRESETS.get(preset).items()}


def _local_config(task: str) -> dict | None:
    """A built-in task's YAML as a dict, with its data file made absolute; None if not built-in."""
    path = TASKS_DIR / f"{task}.yaml"
    if not path.exists():
        return None
    cfg = yaml.safe_load(path.read_text())
    files = cfg["dataset_kwargs"]["data_files"]
    cfg["dataset_kwargs"]["data_files"] = {k: str(TASKS_DIR / v) for k, v in files.items()}
    return cfg


def evaluate(model: nn.Module, tokenizer: Any, *, preset: str | None = "builtin",
             tasks: list[str] | None = None, batch_size: int = 16,
             limit: int | None = None) -> dict[str, float]:
    """task -> score (the preset's metric, or acc / the first metric for a bare task name).
    Raises what evaluate_with_stderr raises."""
    return evaluate_with_stderr(model, tokenizer, preset=preset, tasks=tasks, batch_size=batch_size,
                                limit=limit)[0]


def evaluate_with_stderr(model: nn.Module, tokenizer: Any, *, preset: str | None = "builtin",
                         tasks: list[str] | None = None, batch_size: int = 16,
                         limit: int | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(task -> score, task -> lm-eval's standard error of that score; NaN where it reports none).
    lm-eval's warnings and progress bars go to the debug log (`quiet_lm_eval`). Raises NotFoundError
    for an unknown preset or lm-eval task name, RedundancyError when neither a preset nor a task is
    given."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    spec = preset_tasks(preset) if preset else {}
    spec.update({t: {"shots": 0, "metric": None} for t in tasks or []})
    if not spec:
        raise RedundancyError("nothing to evaluate: give a preset or task names")
    with quiet_lm_eval():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    by_shots: dict[int, list] = defaultdict(list)
    for task, s in spec.items():
        by_shots[s["shots"]].append(_local_config(task) or task)
    scores, stderrs = {}, {}
    manager = _task_manager(any(isinstance(t, str) for tasks in by_shots.values() for t in tasks))
    _check_known([t for tasks in by_shots.values() for t in tasks if isinstance(t, str)], manager)
    for shots, task_list in by_shots.items():
        with quiet_lm_eval():
            out = simple_evaluate(model=lm, tasks=task_list, num_fewshot=shots, limit=limit,
                                  log_samples=False, task_manager=manager)
        for task, metrics in out["results"].items():
            if task in spec:
                scores[task], stderrs[task] = _pick(metrics, spec[task]["metric"])
    return scores, stderrs


def _check_known(names: list[str], manager: Any) -> None:
    """Unknown lm-eval task names: one NotFoundError with the closest known names."""
    import difflib

    known = set(manager.all_tasks) if names else set()
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; list them with `lm-eval ls tasks`"
            raise NotFoundError(f"lm-eval knows no task {name!r}{hint}")


@lru_cache(maxsize=2)
def _task_manager(defaults: bool):
    """lm-eval indexes its ~13k task YAMLs when a TaskManager is made (about 10 s): made once per
    process, and without that index when only built-in (dict-configured) tasks run."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=defaults)


def _pick(metrics: dict[str, Any], metric: str | None) -> tuple[float, float]:
    """lm-eval keys metrics as 'acc,none' and their standard errors as 'acc_stderr,none'; take the
    named one, or acc, or the first number, with its standard error (NaN if lm-eval gives none)."""
    numbers = {k.split(",")[0]: v for k, v in metrics.items() if isinstance(v, (int, float))}
    flat = {k: v for k, v in numbers.items() if "stderr" not in k}
    key = next((k for k in (metric, "acc", "exact_match") if k in flat), next(iter(flat)))
    return float(flat[key]), float(numbers.get(f"{key}_stderr", float("nan")))
