"""The demo's plans timed on builtin:tiny's final step, quiet and under load, side by side, in one run.

For each plan: the paired speedup (speed.paired_speed: baseline and plan alternately, median of
per-pair ratios, range of the ratios) on a quiet machine, then the same while busy processes load
every core for part of each plan's window, and the plan's physical bound (speed.speedup_bound).
A speedup above its bound is printed "disturbed". Plans drop the deepest modules (the demo takes
them from the cube's importance order; which modules go changes the speed little, their number
decides it).

    .venv/bin/python benchmarks/speed_under_load.py [--pairs 5] [--busy-seconds 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

# The demo's plans (redundancy/cli/demo.py DEMO_STUDY) and timing lengths
KS = {"attn": [2, 4, 6], "mlp": [2, 4], "block": [2, 4], "joint": [4]}
PROMPT, NEW, BATCH = 128, 64, 4


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _load_on(seconds: float, period: float) -> list[mp.Process]:
    """One busy process per core, each spinning `seconds`, starting at once and again every
    `period` seconds (a load that comes and goes), bounded: they stop themselves."""
    def cycle() -> None:
        end = time.monotonic() + period * 20
        while time.monotonic() < end:
            _spin(seconds)
            time.sleep(max(period - seconds, 0))
    procs = [mp.Process(target=cycle, daemon=True) for _ in range(os.cpu_count() or 1)]
    for p in procs:
        p.start()
    return procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--busy-seconds", type=float, default=1.5, help="busy part of each load period")
    ap.add_argument("--period", type=float, default=3.0, help="seconds between load bursts")
    a = ap.parse_args()

    from redundancy.drop import DropPlan, load_any, materialize
    from redundancy.sources import open_series
    from redundancy.study.speed import module_costs, paired_speed, paired_speedup, speedup_bound

    src = Path(open_series("builtin:tiny").checkpoints[-1].path)
    base = load_any(src).eval()
    n = base.config.num_hidden_layers
    deepest = list(range(n - 1, -1, -1))
    joint = [(m, layer) for layer in deepest for m in ("attn", "mlp")]
    costs = module_costs(base, PROMPT, NEW)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, counts in KS.items():
            for k in counts:
                plan = DropPlan.from_order(kind, joint if kind == "joint" else deepest, k)
                model = load_any(materialize(src, plan, Path(tmp) / plan.name)).eval()
                bound = speedup_bound(costs, plan.attn, plan.mlp)
                quiet = paired_speed(base, model, PROMPT, NEW, BATCH, pairs=a.pairs)
                procs = _load_on(a.busy_seconds, a.period)
                try:
                    busy = paired_speed(base, model, PROMPT, NEW, BATCH, pairs=a.pairs)
                finally:
                    for p in procs:
                        p.kill()
                rows.append((plan.name, bound,
                             paired_speedup(quiet.baseline_seconds_each, quiet.seconds_each),
                             paired_speedup(busy.baseline_seconds_each, busy.seconds_each)))
                print(_line(*rows[-1]), flush=True)
    print(f"\nbuiltin:tiny final step, {PROMPT} + {NEW} tokens, batch {BATCH}, {a.pairs} pairs, "
          f"{os.cpu_count()} cores loaded {a.busy_seconds} s of every {a.period} s in the busy column")


def _line(name: str, bound: float, quiet: tuple, busy: tuple) -> str:
    def cell(r: tuple) -> str:
        text = f"{r[0]:.2f} ({r[1]:.2f}-{r[2]:.2f})"
        return f"disturbed {text}" if r[0] > bound else text
    return f"{name:<8} bound {bound:5.2f}   quiet {cell(quiet):<28} under load {cell(busy)}"


if __name__ == "__main__":
    main()
