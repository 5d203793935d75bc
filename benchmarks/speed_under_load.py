"""The demo's plans timed on builtin:tiny's final step, quiet and under load, side by side, in one run.

For each plan: the paired speedup (speed.paired_speed: baseline and plan alternately, median of
per-pair ratios, range of the ratios) without added load, then the same while busy processes load
every core for part of each plan's window, and the plan's physical bound (speed.speedup_bound).
A speedup above its bound is printed "disturbed". Plans are the demo preset's (run_presets.yaml),
dropping the deepest modules (the demo takes them from the cube's importance order; which modules
go changes the speed little, their number decides it). "Quiet" means no load this script adds: the
machine's load average is printed before and after, since other jobs may share it.

Timed generations are shorter than the demo's (128 + 64 tokens, batch 4) by default, so that all
eight plans finish in a few minutes on two shared cores; --prompt/--new/--batch give the demo's.
One torch thread by default: on a loaded 2-core machine two threads wait on each other (a paired
timing of 64 + 32 tokens took 206 s with two, 6 s with one, at load 5).

    .venv/bin/python benchmarks/speed_under_load.py [--plans Block-2,Attn-6] [--pairs 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _cycle(seconds: float, period: float) -> None:
    """Busy `seconds` of every `period`, 20 periods at most: bounded, it stops itself."""
    end = time.monotonic() + period * 20
    while time.monotonic() < end:
        _spin(seconds)
        time.sleep(max(period - seconds, 0))


def _load_on(seconds: float, period: float) -> list[mp.Process]:
    """One busy process per core, each spinning `seconds` of every `period` (a load that comes and
    goes), starting at once."""
    procs = [mp.Process(target=_cycle, args=(seconds, period), daemon=True)
             for _ in range(os.cpu_count() or 1)]
    for p in procs:
        p.start()
    return procs


def _load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", default="", help="comma-separated plan names (default: the demo's), "
                    "e.g. Block-2,Attn-6")
    ap.add_argument("--pairs", type=int, default=3, help="(baseline, plan) pairs per timing")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens (the demo: 128)")
    ap.add_argument("--new", type=int, default=16, help="generated tokens (the demo: 64)")
    ap.add_argument("--batch", type=int, default=1, help="sequences per generation (the demo: 4)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--busy-seconds", type=float, default=1.5, help="busy part of each load period")
    ap.add_argument("--period", type=float, default=3.0, help="seconds between load bursts")
    a = ap.parse_args()

    import torch

    from redundancy.drop import DropPlan, load_any, materialize
    from redundancy.sources import open_series
    from redundancy.study import StudySettings
    from redundancy.study.speed import module_costs, paired_speed, paired_speedup, speedup_bound

    torch.set_num_threads(a.threads)
    src = Path(open_series("builtin:tiny").checkpoints[-1].path)
    base = load_any(src).eval()
    n = base.config.num_hidden_layers
    deepest = list(range(n - 1, -1, -1))
    joint = [(m, layer) for layer in deepest for m in ("attn", "mlp")]
    plans = [DropPlan.from_order(kind, joint if kind == "joint" else deepest, k)
             for kind, counts in StudySettings.from_preset("demo").ks.items() for k in counts]
    if a.plans:
        wanted = [p.strip() for p in a.plans.split(",") if p.strip()]
        if unknown := [w for w in wanted if w not in {p.name for p in plans}]:
            raise SystemExit(f"--plans {unknown[0]}: the demo's plans are "
                             f"{', '.join(p.name for p in plans)}")
        plans = [p for p in plans if p.name in wanted]
    costs = module_costs(base, a.prompt, a.new)
    print(f"builtin:tiny final step, {a.prompt} + {a.new} tokens, batch {a.batch}, {a.pairs} pairs, "
          f"{a.threads} torch thread(s); under load: {os.cpu_count()} busy processes, {a.busy_seconds} s "
          f"of every {a.period} s", flush=True)
    print(f"before: {_load_average()}", flush=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for plan in plans:
            model = load_any(materialize(src, plan, Path(tmp) / plan.name)).eval()
            bound = speedup_bound(costs, plan.attn, plan.mlp)
            quiet = paired_speed(base, model, a.prompt, a.new, a.batch, pairs=a.pairs)
            procs = _load_on(a.busy_seconds, a.period)
            try:
                busy = paired_speed(base, model, a.prompt, a.new, a.batch, pairs=a.pairs)
            finally:
                for p in procs:
                    p.kill()
                    p.join()
            print(_line(plan.name, bound, paired_speedup(quiet.baseline_seconds_each, quiet.seconds_each),
                        paired_speedup(busy.baseline_seconds_each, busy.seconds_each)), flush=True)
    print(f"after: {_load_average()}; {time.monotonic() - start:.0f} s", flush=True)


def _line(name: str, bound: float, quiet: tuple, busy: tuple) -> str:
    def cell(r: tuple) -> str:
        text = f"{r[0]:.2f} ({r[1]:.2f}-{r[2]:.2f})"
        return f"disturbed {text}" if r[0] > bound else text
    return f"{name:<8} bound {bound:5.2f}   no added load {cell(quiet):<28} under load {cell(busy)}"


if __name__ == "__main__":
    main()
