"""Issue 21 part 2: a study SIGKILLed in each phase (materialize, quantize, evaluate, perplexity,
speed, table) and run again ends with the same results store and Table 1 as an uninterrupted run,
no row twice, and nothing already stored computed again. Kills are driven by the lines each phase
prints when it starts (run_study's log), never by sleeps. One uninterrupted run serves every kill."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from redundancy.study import open_results

from _models import tiny_model
from _support import make_tokenizer

pytestmark = pytest.mark.slow  # eight small study processes (lm-eval, GPTQ, timing)

# python -c STUDY CHECKPOINT OUT: the study chain on a 4-layer Llama, then its Table 1 as CSV
STUDY = textwrap.dedent("""
    import sys
    from pathlib import Path
    from redundancy._atomic import atomic_file
    from redundancy.study import StudySettings, open_results, results_table, run_study
    ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
    s = StudySettings(ks={"attn": [1, 2], "block": [1]}, quantize=("gptq",), group_size=32, quant_samples=8,
                      limit=2, eval_batch=4, prompt_tokens=8, new_tokens=4, repeats=2,
                      ppl_sets={"prose": ("prose", "text")}, ppl_samples=2, ppl_seq_len=16, scored=(2, 16))
    results = run_study(ckpt, {"attn": [3, 2, 1, 0], "block": [3, 2, 1, 0]}, out, s, "m", 0,
                        log=lambda line: print(line, flush=True))
    print("table", flush=True)
    atomic_file(out / "table.csv", results_table(open_results(results), "m", 0).to_csv())
    print("done", flush=True)
""")

# (what the killed run's line starts with, after "[i/n] ", and which occurrence): in the chain's order
KILLS = [("materialize", 1), ("quantize", 1), ("evaluate", 2), ("perplexity", 1), ("speed", 2), ("table", 1)]
SPEED = ["tokens_per_s", "seconds", "seconds_each", "baseline_seconds_each", "peak_memory_bytes"]


def _run(ckpt, out, kill_at: tuple[str, int] | None = None) -> list[str]:
    """The study's lines; SIGKILLed the moment the `kill_at` line is printed (bounded: 600 s)."""
    proc = subprocess.Popen([sys.executable, "-c", STUDY, str(ckpt), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines, seen, deadline = [], 0, time.time() + 600
    for line in proc.stdout:
        lines.append(line.rstrip())
        phase = line.split("] ", 1)[-1]
        if kill_at and phase.startswith(kill_at[0]):
            seen += 1
            if seen == kill_at[1]:
                proc.kill()
                break
        assert time.time() < deadline, lines
    proc.wait(timeout=60)
    if kill_at:
        assert proc.returncode == -9, (kill_at, lines)
    else:
        assert proc.returncode == 0 and lines[-1] == "done", lines
    return lines


def _phases(lines: list[str]) -> list[str]:
    return [line.split("] ", 1)[-1].split(" (")[0] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    tiny_model("llama", vocab=512, layers=4).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def test_killed_in_every_phase_then_rerun_equals_an_uninterrupted_study(checkpoint, tmp_path):
    whole = _run(checkpoint, tmp_path / "whole")
    assert {"materialize Attn-1", "quantize Attn-2+gptq", "evaluate baseline", "perplexity Block-1",
            "speed Attn-2+gptq", "table"} <= set(_phases(whole))
    out, runs = tmp_path / "killed", []
    for kill_at in KILLS:
        runs.append(_phases(_run(checkpoint, out, kill_at)))
    runs.append(_phases(_run(checkpoint, out)))
    # nothing stored is computed again: run 4 (killed in perplexity) does not evaluate the baseline
    # again, run 6 (killed at the table) neither evaluates nor times anything, run 7 only tabulates
    assert "evaluate baseline" in runs[2] and "evaluate baseline" not in runs[3]
    assert not [p for p in runs[5] if p.split()[0] in ("materialize", "quantize", "evaluate", "speed")]
    assert runs[6][-2:] == ["table", "done"] and len(runs[6]) == 2

    a, b = open_results(tmp_path / "whole" / "results.zarr"), open_results(out / "results.zarr")
    plans = ["Attn-1", "Attn-2", "Attn-2+gptq", "Block-1", "baseline"]
    for ds in (a, b):
        assert sorted(ds["plan"].values) == plans and len(ds["plan"]) == len(set(ds["plan"].values))
    for var in ("score", "score_stderr", "perplexity", "kv_cache_bytes", "speedup_bound", "kind", "n_dropped",
                "quant", "recipe"):
        np.testing.assert_array_equal(a[var].sel(plan=plans).values, b[var].sel(plan=plans).values, var)
    for var in SPEED:  # measured, not equal: present for every row
        assert bool(b[var].notnull().any([d for d in b[var].dims if d not in ("plan",)]).all()) or \
            var in ("peak_memory_bytes", "baseline_seconds_each"), var
    assert b["baseline_seconds_each"].sel(plan=[p for p in plans if p != "baseline"]).notnull().all()

    def table(folder):
        import pandas as pd
        frame = pd.read_csv(folder / "table.csv", index_col=0)
        timed = [c for c in frame.columns if c.startswith("speedup") and c != "speedup_bound"]
        return frame.drop(columns=timed + ["gamma"])
    import pandas as pd
    pd.testing.assert_frame_equal(table(tmp_path / "whole"), table(out))
