"""Issue 21 part 2: a study SIGKILLed in each phase (materialize, quantize, evaluate, perplexity,
speed, table) and run again ends with the same results store and Table 1 as an uninterrupted run,
no row twice, and nothing already stored computed again. Kills are driven by the lines each phase
prints when it starts (run_study's log), never by sleeps. One uninterrupted run serves every kill.

The smallest study with every phase: a 4-layer Llama, one plan (Attn-1) and its GPTQ copy, one
example of the built-in task, two held-out windows, 8 + 4 timed tokens in 2 pairs. Every run is a
real process killed with SIGKILL, forked from one process that imported the toolkit, torch,
transformers, lm-eval and llmcompressor once (about 25 s of imports on a busy 2-core machine, paid
once instead of eight times); that process runs no torch work before forking."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pandas as pd
import pytest

from redundancy.study import open_results

from _models import tiny_model
from _support import cli_here, make_tokenizer

# python -c ZYGOTE CHECKPOINT; then one results folder a line on stdin: each is a forked study run
# (its first line "pid N"), then the study's Table 1 as CSV; the zygote says "exit CODE" when it ends.
# Every line of theirs starts with "@ " (llmcompressor's loguru logs to stdout too)
ZYGOTE = textwrap.dedent("""
    import os, sys, traceback
    from pathlib import Path
    import llmcompressor, lm_eval, lm_eval.models.huggingface  # noqa: F401 - imported once, before forking
    import redundancy.study.evaluate, redundancy.study.perplexity  # noqa: F401
    import redundancy.study.quantize, redundancy.study.speed  # noqa: F401
    from llmcompressor import oneshot  # noqa: F401
    from redundancy._atomic import atomic_file
    from redundancy.study import StudySettings, open_results, results_table, run_study
    ckpt = Path(sys.argv[1])
    s = StudySettings(ks={"attn": [1]}, quantize=("gptq",), group_size=32, quant_samples=2, limit=1,
                      eval_batch=4, prompt_tokens=8, new_tokens=4, repeats=2,
                      ppl_sets={"prose": ("prose", "text")}, ppl_samples=2, ppl_seq_len=16, scored=(2, 16))
    print("@ ready", flush=True)
    for request in sys.stdin:
        out = Path(request.strip())
        pid = os.fork()
        if pid == 0:
            code = 1
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the requests are the zygote's, not the run's
            sys.stdin = open(os.devnull)
            try:
                print("@ pid", os.getpid(), flush=True)
                results = run_study(ckpt, {"attn": [3, 2, 1, 0]}, out, s, "m", 0,
                                    log=lambda line: print("@", line, flush=True))
                print("@ table", flush=True)
                atomic_file(out / "table.csv", results_table(open_results(results), "m", 0).to_csv())
                print("@ done", flush=True)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("@ exit", os.waitstatus_to_exitcode(status), flush=True)
""")

# (what the killed run's line starts with, after "[i/n] ", and which occurrence): in the chain's order.
# Variants: [1/3] baseline, [2/3] Attn-1, [3/3] Attn-1+gptq
KILLS = [("materialize", 1), ("quantize", 1), ("evaluate", 2), ("perplexity", 1), ("speed", 3), ("table", 1)]
SPEED = ["tokens_per_s", "seconds", "seconds_each", "baseline_seconds_each"]
PLANS = ["Attn-1", "Attn-1+gptq", "baseline"]


class Zygote:
    """The forking process; `run` sends it one study and reads that study's lines."""

    def __init__(self, ckpt, log):
        self.log = log
        # one torch thread: the tiny model's ops are overheads, and two threads on two shared cores
        # wait on each other (5 ms a 64-wide matmul under load 5; `make test` sets the same)
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(ckpt)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
                                     start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        # bounded: the whole group (zygote and its runs) is killed after 15 minutes, hung or not
        self.watchdog = threading.Timer(900, lambda: os.killpg(self.proc.pid, signal.SIGKILL))
        self.watchdog.daemon = True
        self.watchdog.start()
        if self._line() != "ready":
            self.close()
            raise AssertionError(f"the zygote did not start: {self._tail()}")

    def _line(self) -> str | None:
        """The next line of the zygote or its run ("@ " taken off); None at the end of its output."""
        for line in self.proc.stdout:
            if line.startswith("@ "):
                return line[2:].rstrip()
        return None

    def _tail(self) -> str:
        return self.log.read_text()[-3000:]

    def run(self, out, kill_at: tuple[str, int] | None = None) -> list[str]:
        """The study's lines; SIGKILLed the moment the `kill_at` line is printed."""
        self.proc.stdin.write(f"{out}\n")
        self.proc.stdin.flush()
        lines, seen, pid = [], 0, None
        while (line := self._line()) is not None:
            if line.startswith("exit "):
                code = int(line.split()[1])
                break
            lines.append(line)
            if line.startswith("pid "):
                pid = int(line.split()[1])
            phase = line.split("] ", 1)[-1]
            if kill_at and phase.startswith(kill_at[0]):
                seen += 1
                if seen == kill_at[1]:
                    os.kill(pid, signal.SIGKILL)
        else:
            raise AssertionError(f"the zygote ended: {lines}\n{self._tail()}")
        if kill_at:
            assert code == -signal.SIGKILL, (kill_at, lines, self._tail())
        else:
            assert code == 0 and lines[-1] == "done", (lines, self._tail())
        return lines

    def close(self):
        self.watchdog.cancel()
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _phases(lines: list[str]) -> list[str]:
    return [line.split("] ", 1)[-1].split(" (")[0] for line in lines if line.strip() and
            not line.startswith("pid ")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    tiny_model("llama", vocab=512, layers=4).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.slow  # eight small study runs (lm-eval, GPTQ, timing): ~1.5 min on 2 busy cores
def test_killed_in_every_phase_then_rerun_equals_an_uninterrupted_study(checkpoint, tmp_path):
    zygote = Zygote(checkpoint, tmp_path / "stderr.log")  # its watchdog ends it, failed or hung
    try:
        whole = _phases(zygote.run(tmp_path / "whole"))
        out, runs = tmp_path / "killed", []
        for kill_at in KILLS:
            runs.append(_phases(zygote.run(out, kill_at)))
        runs.append(_phases(zygote.run(out)))
    finally:
        zygote.close()
    assert whole == ["materialize Attn-1", "quantize Attn-1+gptq",
                     "evaluate baseline", "perplexity baseline", "evaluate Attn-1", "perplexity Attn-1",
                     "evaluate Attn-1+gptq", "perplexity Attn-1+gptq",
                     "speed baseline", "speed Attn-1", "speed Attn-1+gptq", "table", "done"], whole
    # each run ends at its kill, and a rerun does only what the killed one had not stored
    assert [r[-1] for r in runs[:-1]] == ["materialize Attn-1", "quantize Attn-1+gptq", "evaluate Attn-1",
                                         "perplexity Attn-1", "speed Attn-1+gptq", "table"], runs
    assert "evaluate baseline" in runs[2] and "evaluate baseline" not in runs[3]  # stored before the kill
    assert runs[3] == ["evaluate Attn-1", "perplexity Attn-1"], runs[3]  # Attn-1's scores were not stored
    assert runs[4][0] == "perplexity Attn-1" and "evaluate Attn-1" not in runs[4], runs[4]
    assert runs[5] == ["speed Attn-1+gptq", "table"], runs[5]  # the two rows timed before are kept
    assert runs[6] == ["table", "done"], runs[6]  # everything stored: only the table is written
    assert not [p for r in runs[1:] for p in r if p == "materialize Attn-1"][1:]  # made once it was whole

    a, b = open_results(tmp_path / "whole" / "results.zarr"), open_results(out / "results.zarr")
    for ds in (a, b):
        assert sorted(ds["plan"].values) == PLANS and len(ds["plan"]) == len(set(ds["plan"].values))
    for var in ("score", "score_stderr", "perplexity", "kv_cache_bytes", "speedup_bound", "kind", "n_dropped",
                "quant", "recipe"):
        np.testing.assert_array_equal(a[var].sel(plan=PLANS).values, b[var].sel(plan=PLANS).values, var)
    for var in SPEED:  # measured, not equal: present for every row (the baseline has no paired side)
        timed = PLANS[:2] if var == "baseline_seconds_each" else PLANS
        assert bool(b[var].sel(plan=timed).notnull().all()), var

    def table(folder):
        frame = pd.read_csv(folder / "table.csv", index_col=0)
        timed = [c for c in frame.columns if c.startswith("speedup") and c != "speedup_bound"]
        return frame.drop(columns=timed + ["gamma"])
    pd.testing.assert_frame_equal(table(tmp_path / "whole"), table(out))


def test_evaluate_refuses_before_loading_the_model(tmp_path):
    """Issue 21 part 2 for `evaluate`: what its later steps need (something to evaluate, the tokenizer,
    eos and pad ids that are ids) is refused in one line before the model is read. The folders have
    no weights: an error about weights would mean the model was loaded before the check."""
    good = tmp_path / "good"
    tiny_model("llama", vocab=512).save_pretrained(good)
    make_tokenizer().save_pretrained(good)
    for f in good.glob("*.safetensors"):
        f.unlink()
    no_tokenizer, bad_eos = tmp_path / "no_tokenizer", tmp_path / "bad_eos"
    shutil.copytree(good, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    shutil.copytree(good, bad_eos)
    config = json.loads((bad_eos / "config.json").read_text())  # as transformers wrote it
    (bad_eos / "config.json").write_text(json.dumps({**config, "eos_token_id": "</s>"}))
    for folder, args, said in [(no_tokenizer, [], "cannot load the tokenizer"),
                               (bad_eos, [], "eos_token_id"),
                               (good, ["--preset", ""], "nothing to evaluate")]:
        r = cli_here("evaluate", folder, *args, "--limit", "1")
        assert r.returncode != 0 and said in r.stderr, (folder, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
