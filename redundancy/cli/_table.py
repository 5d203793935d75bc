"""Table 1 as people read it: scores x100, average ± standard error, held-out perplexity, speedup
with its range ("noise" where it covers 1.0, "disturbed" where it exceeds what the plan can give),
gamma, KV cache; in the terminal and as Markdown."""
from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

from ..study.results import BASELINE

_NOT_TASKS = ("average", "average_stderr", "pct_of_baseline", "speedup", "speedup_low", "speedup_high",
              "speedup_noise", "speedup_disturbed", "speedup_bound", "gamma", "kv_cache_bytes", "kind",
              "n_dropped", "quant", "below")


def cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows: scores x100 (one decimal), average ± its standard error, held-out
    perplexity, speedup with its range ("noise" where the range covers 1.0, "disturbed" above the
    plan's bound: no gamma then), gamma, KV cache in MiB."""
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
    """"1.21 (1.15-1.27)"; "noise (0.95-1.08)" where the repeats' range covers 1.0; "disturbed:
    3.10 > bound 1.29" where the speedup exceeds what the plan can physically give (the timing was
    disturbed, e.g. by another job: not a result)."""
    value, low, high = (r.get(k, math.nan) for k in ("speedup", "speedup_low", "speedup_high"))
    if plan != BASELINE and r.get("speedup_disturbed") in (True, 1):
        return f"disturbed: {value:.2f} > bound {r.get('speedup_bound', math.nan):.2f}"
    if plan == BASELINE or not (isinstance(low, float) and math.isfinite(low)):
        return _fmt(value, 2)
    spread = f"({low:.2f}-{high:.2f})"
    return f"noise {spread}" if r.get("speedup_noise") else f"{value:.2f} {spread}"


def _fmt(v: float, digits: int) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def rich_table(frame: pd.DataFrame, title: str) -> tuple[Table, int]:
    """The table, and the width it needs to print every cell whole (a log or a narrow terminal
    would otherwise cut "Block-4 *" to "Bloc…")."""
    header, rows = cells(frame)
    table = Table(*header, title=title)
    for row, below in zip(rows, frame["below"]):
        table.add_row(*row, style="red" if below else None)
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]
    return table, sum(widths) + 3 * len(widths) + 1  # a space each side of a cell, one border each


def markdown(frame: pd.DataFrame, title: str) -> str:
    header, rows = cells(frame)
    lines = [f"# {title} (* under 95% of baseline; scores x100)", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
