"""CLI glue for the study chain: quantize, study, table (printing and saving only; the work is in
quantize.py, study.py and results.py)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.table import Table

from ._run import _stored_order, console
from .errors import RedundancyError
from .results import BASELINE, open_results, results_table
from .study import StudySettings, run_study

KINDS = ("attn", "mlp", "block", "joint")


def quantize_command(checkpoint: Path, out: Path, method: str, group_size: int, calibration: str,
                     samples: int, seq_len: int, overwrite: bool = False) -> Path:
    from .quantize import quantize

    if method not in ("awq", "gptq"):
        raise RedundancyError(f"--method {method!r} is not one of awq, gptq")
    path = quantize(checkpoint, out, method, group_size, calibration, samples, seq_len, overwrite=overwrite)
    console.print(f"{method.upper()} W4A16 (group size {group_size}) -> {path}")
    return path


def study_command(checkpoint: Path, store: Path, dataset: str, out: Path, s: StudySettings, model: str, step: int,
                  order_metric: str = "importance") -> Path:
    """Orders from the cube's last step -> plans -> evaluate, time, quantize -> table and curves."""
    from ._atomic import check_output
    from ._run import check_device
    check_device(s.device)
    check_output(out, [checkpoint, store], overwrite=True)  # an existing --out is the study resuming
    orders = {kind: _stored_order(store, dataset, kind, "one-shot", order_metric) for kind in KINDS if s.ks.get(kind)}
    if s.ppl_samples > 0 and not s.ppl_sets:
        s = _heldout_from_cube(s, store)
    results = run_study(checkpoint, orders, out, s, model, step, log=console.print)
    table_command(results, model, step, out / "table")
    curves(results, model, step, dataset, out / "figures" / "accuracy_vs_dropped")
    return results


def _heldout_from_cube(s: StudySettings, store: Path) -> StudySettings:
    """Perplexity on every calibration set of the cube, after the windows its scoring could draw."""
    from dataclasses import replace

    from .calibration._spec import spec_of
    from .cube import CubeStore, open_cube

    cube = CubeStore(store)
    settings = cube.settings()
    labels = [str(d) for d in open_cube(store)["dataset"].values]
    return replace(s, ppl_sets={d: spec_of(d, cube.dataset_source(d)) for d in labels},
                   scored=(settings["n_samples"], settings["seq_len"]))


def checkpoint_step(checkpoint: Path) -> int:
    """The step in checkpoint.json (written by our sources), else 0."""
    import json

    meta = checkpoint / "checkpoint.json"
    return int(json.loads(meta.read_text())["step"]) if meta.exists() else 0


def curves(results: Path, model: str, step: int, dataset: str, path: Path) -> list[Path]:
    import analyses

    row = open_results(results).sel(model=model, step=step)
    fig = analyses.plots.accuracy_vs_dropped(
        row, title=f"{model} step {step}: accuracy vs modules dropped (order from {dataset})")
    made = analyses.save(fig, path)
    console.print(f"figure: {made[0]}")
    return made


def table_command(results: Path, model: str | None, step: int | None, out: Path | None) -> pd.DataFrame:
    """Print the Table 1 of one (model, step) (default: the only model, its last step); save CSV + Markdown."""
    ds = open_results(results)
    model = model or _only(ds, "model")
    step = step if step is not None else int(ds.sel(model=model)["step"].values[-1])
    frame = results_table(ds, model, step)
    console.print(_rich(frame, f"{model}, step {step} (* under 95% of baseline)"))
    if out is not None:
        from ._atomic import atomic_file
        atomic_file(out.with_suffix(".csv"), frame.to_csv())
        atomic_file(out.with_suffix(".md"), _markdown(frame, f"{model}, step {step}"))
        console.print(f"table: {out.with_suffix('.csv')}, {out.with_suffix('.md')}")
    return frame


def _only(ds, dim: str) -> str:
    values = [str(v) for v in ds[dim].values]
    if len(values) != 1:
        raise RedundancyError(f"the results hold {len(values)} {dim}s ({', '.join(values)}); pick one with --{dim}")
    return values[0]


_NOT_TASKS = ("average", "average_stderr", "pct_of_baseline", "speedup", "speedup_low", "speedup_high",
              "speedup_noise", "gamma", "kv_cache_bytes", "kind", "n_dropped", "quant", "below")


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows: scores x100 (one decimal), average ± its standard error, held-out
    perplexity, speedup with its range ("noise" where the range covers 1.0), gamma, KV cache in MiB."""
    ppl = [c for c in frame.columns if c.startswith("ppl ")]
    tasks = [c for c in frame.columns if c not in _NOT_TASKS and c not in ppl]
    header = ["plan", *tasks, "avg", "% base", *ppl, "speedup", "gamma", "KV MiB"]
    rows = []
    for plan, r in frame.iterrows():
        se = 100 * r.get("average_stderr", math.nan)
        avg = _fmt(100 * r.get("average", math.nan), 1) + (f" ± {se:.1f}" if math.isfinite(se) else "")
        vals = [_fmt(100 * r[t], 1) for t in tasks] + [avg, _fmt(r.get("pct_of_baseline", math.nan), 1)]
        rows.append([f"{plan}{' *' if r['below'] else ''}", *vals, *[_fmt(r[c], 2) for c in ppl],
                     _speedup(r, plan), _fmt(r.get("gamma", math.nan), 2),
                     _fmt(r.get("kv_cache_bytes", math.nan) / 2**20, 2)])
    return header, rows


def _speedup(r: pd.Series, plan: str) -> str:
    """"1.21 (1.15-1.27)"; "noise (0.95-1.08)" where the repeats' range covers 1.0."""
    value, low, high = (r.get(k, math.nan) for k in ("speedup", "speedup_low", "speedup_high"))
    if plan == BASELINE or not (isinstance(low, float) and math.isfinite(low)):
        return _fmt(value, 2)
    spread = f"({low:.2f}-{high:.2f})"
    return f"noise {spread}" if r.get("speedup_noise") else f"{value:.2f} {spread}"


def _fmt(v: float, digits: int) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _rich(frame: pd.DataFrame, title: str) -> Table:
    header, rows = _cells(frame)
    table = Table(*header, title=title)
    for row, below in zip(rows, frame["below"]):
        table.add_row(*row, style="red" if below else None)
    return table


def _markdown(frame: pd.DataFrame, title: str) -> str:
    header, rows = _cells(frame)
    lines = [f"# {title} (* under 95% of baseline; scores x100)", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
