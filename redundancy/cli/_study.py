"""The post-drop commands' work: plans from stored orders, the study chain with its table and curve,
evaluation and quantization of one checkpoint (printing and saving only; the work is in study/)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..errors import RedundancyError
from ..study import StudySettings, open_results, results_table, run_study
from ._console import console

KINDS = ("attn", "mlp", "block", "joint")


def stored_order(store: Path | None, dataset: str | None, kind: str, strategy: str,
                 metric: str = "importance"):
    """The order of the cube's last scored step (one model, one dataset): layers, or (module,
    layer) pairs for joint."""
    import analyses

    from ..cube import open_cube

    if store is None or dataset is None:
        raise RedundancyError("--kind needs --store and --dataset to read the order from")
    cube = open_cube(store)
    if cube.sizes["model"] != 1:
        raise RedundancyError(f"{store} holds several models; score the one you drop into its own store")
    m = analyses.report.final_step(cube, cube["model"].values[0]).sel(dataset=dataset)
    if metric not in m:
        raise RedundancyError(f"{store} holds no {metric}; score it with --metric {metric}")
    if kind == "joint":
        j = analyses.joint_order(m[metric].mean("sample"))
        return [(str(a), int(b)) for a, b in zip(j["module"].values, j["layer"].values) if b >= 0]
    if strategy == "iterative":
        if "drop_order" not in m:
            raise RedundancyError(f"{store} holds no iterative orders: run `redundancy order` first")
        order = m["drop_order"].sel(strategy="iterative", module=kind).values
    else:
        order = analyses.drop_order(m.sel(module=kind), metric=metric).values
    return [int(x) for x in order if x >= 0]


def study_command(checkpoint: Path, store: Path, dataset: str, out: Path, s: StudySettings, model: str,
                  step: int, order_metric: str = "importance") -> Path:
    """Orders from the cube's last step -> plans -> evaluate, time, quantize -> table and curves."""
    from .._atomic import check_output
    from .._device import check_device

    check_device(s.device)
    # an existing study resumes
    check_output(out, [checkpoint] + ([store] if isinstance(store, Path) else []), overwrite=True,
                 kind="study")
    orders = {kind: stored_order(store, dataset, kind, "one-shot", order_metric)
              for kind in KINDS if s.ks.get(kind)}
    if s.ppl_samples > 0 and not s.ppl_sets:
        s = heldout_from_cube(s, store)
    results = run_study(checkpoint, orders, out, s, model, step, log=console.print)
    table_command(results, model, step, out / "table")
    curves(results, model, step, dataset, out / "figures" / "accuracy_vs_dropped")
    return results


def heldout_from_cube(s: StudySettings, store: Path) -> StudySettings:
    """Perplexity on every calibration set of the cube, after the windows its scoring could draw."""
    from ..calibration._spec import spec_of
    from ..cube import CubeStore, open_cube

    cube = CubeStore(store)
    settings = cube.settings()
    labels = [str(d) for d in open_cube(store)["dataset"].values]
    return replace(s, ppl_sets={d: spec_of(d, cube.dataset_source(d)) for d in labels},
                   scored=(settings["n_samples"], settings["seq_len"]))


def curves(results: Path, model: str, step: int, dataset: str, path: Path) -> list[Path]:
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
