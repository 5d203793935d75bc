"""The post-drop commands' work: plans from stored orders, the study chain with its table and curve,
evaluation and quantization of one checkpoint (printing and saving only; the work is in study/)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import RedundancyError
from ..study import open_results, results_table, study_from_cube
from ..study.settings import StudySettings
from ._console import console


def study_command(checkpoint: Path, *, store: "str | Path", out: Path, settings: StudySettings,
                  model: str | None = None, step: int | None = None) -> Path:
    """study.study_from_cube with its log on the console, then Table 1 printed and saved, and the
    accuracy-vs-dropped curve drawn (analyses joins here: the library never imports it)."""
    run = study_from_cube(checkpoint, store=store, out=out, settings=settings, model=model, step=step,
                          log=console.print)
    table_command(run.results, run.model, run.step, out / "table")
    curves(run.results, model=run.model, step=run.step, dataset=settings.dataset,
           path=out / "figures" / "accuracy_vs_dropped")
    return run.results


def curves(results: Path, *, model: str, step: int, dataset: str, path: Path) -> list[Path]:
    """The accuracy-vs-dropped curve of one (model, step), with lm-eval's error bars."""
    import analyses

    row = open_results(results, log=_warn).sel(model=model, step=step)
    fig = analyses.plots.accuracy_vs_dropped(
        row, title=f"{model} step {step}: accuracy vs modules dropped (order from {dataset})")
    made = analyses.save(fig, path)
    console.print(f"figure: {made[0]}")
    return made


def table_command(results: Path, model: str | None, step: int | None, out: Path | None) -> pd.DataFrame:
    """Print the Table 1 of one (model, step) (default: the only model, its last step); save CSV +
    Markdown."""
    from rich.console import Console

    from ._table import markdown, rich_table

    ds = open_results(results, log=_warn)
    model = model or _only(ds, "model")
    step = step if step is not None else int(ds.sel(model=model)["step"].values[-1])
    frame = results_table(ds, model, step)
    table, width = rich_table(frame, f"{model}, step {step} (* under 95% of baseline)")
    Console(stderr=True, width=max(width, console.width)).print(table)  # every cell whole
    if out is not None:
        from .._atomic import atomic_file
        atomic_file(out.with_suffix(".csv"), frame.to_csv())
        atomic_file(out.with_suffix(".md"), markdown(frame, f"{model}, step {step}"))
        console.print(f"table: {out.with_suffix('.csv')}, {out.with_suffix('.md')}")
    return frame


def _warn(line: str) -> None:
    """A repair or fallback the results store reports (on stderr, as written: paths hold brackets)."""
    console.print(f"warning: {line}", markup=False)


def _only(ds, dim: str) -> str:
    values = [str(v) for v in ds[dim].values]
    if len(values) != 1:
        raise RedundancyError(f"the results hold {len(values)} {dim}s ({', '.join(values)}); "
                              f"pick one with --{dim}")
    return values[0]
