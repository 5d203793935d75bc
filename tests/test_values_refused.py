"""Values that cannot be right are refused before any work, in one line naming the value (issue 24,
part 7); an --out that is a symlink behaves as the folder it names (part 8)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from redundancy.cli import app
from redundancy.errors import SeriesError
from redundancy.sources import Checkpoint, read_step
from redundancy.sources._select import select

from _fakehub import FakeHub

FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]
OLMO = ["step0-tokens0B", "step1000-tokens4B", "step2000-tokens8B"]  # 8e9 tokens at the last step


def run(*args):
    """(exit code, stdout, stderr) of the CLI, in this process."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def refused(args, *needles: str) -> str:
    """The command fails with exactly one line on stderr, an `error:` line holding every needle."""
    code, out, err = run(*args)
    lines = err.splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:"), (code, out, err)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(local_series) -> Path:
    return local_series / "step-10"  # a tiny llama of 256 positions


@pytest.fixture(scope="module")
def cube(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cube") / "cube.zarr"
    code, output, err = run("score", f"local:{ckpt}", "--out", out, *FAST)
    assert code == 0, output + err
    return out


def _with_meta(ckpt: Path, root: Path, meta: str) -> Path:
    """A copy of the checkpoint whose checkpoint.json reads `meta` (written as is: NaN, Infinity)."""
    folder = root / "series" / "step-10"
    shutil.copytree(ckpt, folder)
    (folder / "checkpoint.json").write_text(meta)
    return folder


# ---- 7. values read from files ------------------------------------------------------------------

BAD_META = {
    "fraction": ('{"step": 1.5}', "step 1.5"),
    "negative": ('{"step": -1}', "step -1"),
    "bool": ('{"step": true}', "step true"),
    "word": ('{"step": "10k"}', 'step "10k"'),
    "nan tokens": ('{"step": 10, "tokens": NaN}', "tokens NaN"),
    "inf tokens": ('{"step": 10, "tokens": Infinity}', "tokens Infinity"),
    "negative tokens": ('{"step": 10, "tokens": -5}', "tokens -5"),
    "no step": ('{"tokens": 5}', "holds no 'step'"),
    "not json": ('{"step": 10', "is not JSON"),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_checkpoint_json_values_are_refused(ckpt, tmp_path, case):
    meta, needle = BAD_META[case]
    folder = _with_meta(ckpt, tmp_path, meta)
    with pytest.raises(SeriesError, match="checkpoint.json") as exc:
        read_step(folder)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_fractional_step_refused_by_score(ckpt, tmp_path):
    """`"step": 1.5` was stored as step 1 with exit code 0."""
    folder = _with_meta(ckpt, tmp_path, '{"step": 1.5}')
    refused(["score", f"local:{folder.parent}", "--out", tmp_path / "c.zarr", *FAST],
            "step 1.5", str(folder / "checkpoint.json"))
    assert not (tmp_path / "c.zarr" / "cells").exists()


def test_fractional_step_refused_by_evaluate(ckpt, tmp_path):
    folder = _with_meta(ckpt, tmp_path, '{"step": 1.5}')
    refused(["evaluate", folder, "--out", tmp_path / "r.zarr", "--limit", "1"], "step 1.5", "checkpoint.json")
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize("meta,step,tokens", [('{"step": "10"}', 10, None),
                                              ('{"step": 10.0, "tokens": "4e4"}', 10, 4e4),
                                              ('{"step": 0, "tokens": null}', 0, None)])
def test_whole_steps_in_other_spellings_are_read(ckpt, tmp_path, meta, step, tokens):
    reading = read_step(_with_meta(ckpt, tmp_path, meta))
    assert (reading.step, reading.tokens) == (step, tokens)


def test_trainer_state_step_is_checked(ckpt, tmp_path):
    folder = tmp_path / "checkpoint-7"
    shutil.copytree(ckpt, folder)
    (folder / "checkpoint.json").unlink()
    (folder / "trainer_state.json").write_text('{"global_step": 7.5}')
    with pytest.raises(SeriesError, match=r"trainer_state.json: global_step 7.5 is not a training step"):
        read_step(folder)


# ---- 7. options -----------------------------------------------------------------------------------

def test_unknown_strategy_refused(ckpt, cube, tmp_path):
    """`drop --strategy bogus` exited 0 and `--strategy iterativ` used the one-shot order."""
    base = ["drop", ckpt, "--kind", "attn", "--k", "1", "--store", cube, "--dataset", "math",
            "--out", tmp_path / "d"]
    refused([*base, "--strategy", "bogus"], "--strategy", "'bogus'", "Known: iterative, one-shot")
    refused([*base, "--strategy", "iterativ"], "'iterativ'", "Did you mean 'iterative'?")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("value", ["0", "-1", "1"])
def test_list_max_below_two_refused(value):
    refused(["list", "org/none", "--max", value], f"--max {value}", "at least 2")


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_tokens_per_step_must_be_positive(value):
    refused(["list", "org/none", "--tokens-per-step", value], "--tokens-per-step", value)


@pytest.mark.parametrize("value", ["0", "0B", "-1", "lots"])
def test_every_must_be_a_positive_token_count(value):
    refused(["list", "org/none", "--every", value], repr(value))


@pytest.fixture(scope="module")
def olmo_hub(ckpt, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    for name in OLMO + ["main"]:
        shutil.copytree(ckpt, root / "allenai" / "OLMo-grid" / name)
    return root


@pytest.mark.parametrize("every", ["1", "0.5"])
def test_every_token_answers_at_once(olmo_hub, env, every):
    """`--every 1` over 8e9 tokens built 8e9 grid points in Python: no answer within two minutes."""
    start = time.monotonic()
    with FakeHub(olmo_hub) as hub:
        code, out, err = run("list", "allenai/OLMo-grid", "--preset", "olmo", "--every", every,
                             "--endpoint", hub.endpoint)
    assert code == 0, out + err
    assert [int(line.split()[0]) for line in out.splitlines()[1:]] == [0, 1000, 2000]
    assert time.monotonic() - start < 60


def test_grid_never_enumerates_its_points():
    """A trillion tokens a step, one token apart: the checkpoints nearest some grid point are all."""
    ckpts = [Checkpoint(step=s, tokens=s * 1e12) for s in range(0, 50_000, 10)]
    start = time.monotonic()
    assert [c.step for c in select(ckpts, every=1.0)] == [c.step for c in ckpts]
    assert [c.step for c in select(ckpts, every=2.5e15)] == [*range(0, 50_000, 2500), 49_990]
    assert time.monotonic() - start < 5


def test_grid_picks_the_nearest_checkpoint():
    ckpts = [Checkpoint(step=s, tokens=t) for s, t in [(0, 0.0), (1, 3.0), (2, 4.0), (3, 9.0), (4, 20.0)]]
    # points 0, 5, 10, 15, 20: nearest tokens 0, 4 (step 2), 9 (step 3), 20 (5 away, 9 is 6), 20
    assert [c.step for c in select(ckpts, every=5.0)] == [0, 2, 3, 4]


def test_prompt_past_the_context_refused(ckpt, cube, tmp_path):
    """`study --prompt 300` on a model of 256 positions exited 0 and printed timings."""
    line = refused(["study", ckpt, "--store", cube, "--dataset", "math", "--out", tmp_path / "s",
                    "--prompt", "300", "--new", "8"], "--prompt 300", "--new 8", "256 positions")
    assert "config.json" in line
    assert not (tmp_path / "s").exists()


def test_study_settings_are_checked_by_the_library(ckpt):
    from redundancy.errors import NotFoundError, RedundancyError
    from redundancy.study import StudySettings
    from redundancy.study.chain import check_settings

    check_settings(ckpt, StudySettings(prompt_tokens=128, new_tokens=128))  # 256: fits
    resolved = check_settings(ckpt, StudySettings())  # unset: half the positions each
    assert (resolved.prompt_tokens, resolved.new_tokens) == (128, 128)
    with pytest.raises(RedundancyError, match="--prompt 2048 \\+ --new 2048 = 4096 tokens exceed the 256"):
        check_settings(ckpt, StudySettings(prompt_tokens=2048, new_tokens=2048))
    with pytest.raises(RedundancyError, match="--repeats 1: must be"):
        check_settings(ckpt, StudySettings(prompt_tokens=8, new_tokens=8, repeats=1))
    with pytest.raises(NotFoundError, match="Did you mean 'awq'"):
        check_settings(ckpt, StudySettings(prompt_tokens=8, new_tokens=8, quantize=["awk"]))
    with pytest.raises(RedundancyError, match="--ppl-seq-len 512.*256 positions|512 tokens exceed the 256"):
        check_settings(ckpt, StudySettings(prompt_tokens=8, new_tokens=8, ppl_seq_len=512))


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "redundancy.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["score", "builtin:tiny", "--out", "c.zarr", "--samples", "1e3"], "'1e3'"),
    (["score", "builtin:tiny", "--out", "c.zarr", "--bogus"], "--bogus"),
    (["score", "--out", "c.zarr"], "Missing argument"),
    (["list", "org/none", "--max", "two"], "'two'"),
])
def test_usage_errors_are_one_line(tmp_path, args, needle):
    """typer printed usage errors in a framed box of several lines."""
    r = subprocess.run([sys.executable, "-m", "redundancy.cli", *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert needle in lines[0] and "--help" in lines[0]
    assert not list(tmp_path.iterdir())


# Every option checked against what it can mean: counts, names from their registry, paths.
SCORE = ["score", "builtin:tiny", "--out", "{tmp}/c"]
LOCAL = ["score", "local:{ckpt}", "--out", "{tmp}/c"]
ORDER = ["order", "builtin:tiny", "--out", "{tmp}/c"]
DROP = ["drop", "{ckpt}", "--out", "{tmp}/d"]
QUANT = ["quantize", "{ckpt}", "--out", "{tmp}/q"]
STUDY = ["study", "{ckpt}", "--store", "{cube}", "--out", "{tmp}/s"]
SWEEP = [
    ([*SCORE, "--dtype", "float8"], ["--dtype", "'float8'", "Did you mean"]),
    ([*SCORE, "--executor", "rey"], ["'rey'", "Did you mean 'ray'"]),
    ([*SCORE, "--workers", "0"], ["--workers 0"]),
    ([*SCORE, "--seed", "-1"], ["--seed -1"]),
    ([*SCORE, "--samples", "0"], ["--samples 0"]),
    ([*SCORE, "--seq-len", "1"], ["--seq-len 1"]),
    ([*SCORE, "--batch-size", "0"], ["--batch-size 0"]),
    ([*SCORE, "--metric", "importanse"], ["'importanse'", "Did you mean"]),
    ([*LOCAL, "--preset", "pythai"], ["'pythai'", "Did you mean 'pythia'"]),
    ([*LOCAL, "--pattern", "(?P<step"], ["'(?P<step'", "not a regular"]),
    ([*LOCAL, "--pattern", "step(\\d+)"], ["has no (?P<step>"]),
    (["crawl", "org/none", "--out", "{tmp}/c", "--cache-dir", "{file}"], ["--cache-dir", "is a file"]),
    (["list", "org/none", "--step", "-3"], ["--step -3"]),
    ([*ORDER, "--module", "attention"], ["'attention'", "'attn'"]),
    ([*ORDER, "--metric", "kll"], ["'kll'", "Did you mean 'kl'"]),
    ([*ORDER, "--batch-size", "0"], ["--batch-size 0"]),
    (["drop", "{tmp}/none", "--out", "{tmp}/d", "--attn", "1"], ["CHECKPOINT", "does not exist"]),
    ([*DROP, "--kind", "atn"], ["'atn'", "Did you mean 'attn'"]),
    ([*DROP, "--kind", "attn", "--k", "0"], ["--k 0", "at least 1"]),
    ([*DROP, "--kind", "attn", "--k", "1", "--store", "{tmp}/none", "--dataset", "math"],
     ["not a cube store"]),
    (["evaluate", "{ckpt}", "--preset", "papper"], ["'papper'", "Did you mean 'paper'"]),
    (["evaluate", "{ckpt}", "--batch-size", "0"], ["--batch-size 0"]),
    (["evaluate", "{ckpt}", "--limit", "0"], ["--limit 0"]),
    (["evaluate", "{ckpt}", "--step", "-1"], ["--step -1"]),
    ([*QUANT, "--method", "awk"], ["'awk'", "Did you mean 'awq'"]),
    ([*QUANT, "--group-size", "0"], ["--group-size 0"]),
    ([*QUANT, "--samples", "0"], ["--samples 0"]),
    ([*STUDY, "--repeats", "1"], ["--repeats 1"]),
    ([*STUDY, "--quant", "awk"], ["'awk'", "'awq'"]),
    ([*STUDY, "--ppl-samples", "-1"], ["--ppl-samples -1"]),
    ([*STUDY, "--ppl-seq-len", "1"], ["--ppl-seq-len 1"]),
    ([*STUDY, "--prompt", "0"], ["--prompt 0"]),
    ([*STUDY, "--new", "0"], ["--new 0"]),
    ([*STUDY, "--batch", "0"], ["--batch 0"]),
    ([*STUDY, "--order-metric", "x"], ["--order-metric", "'x'"]),
    ([*STUDY, "--preset", "bultin"], ["'bultin'", "'builtin'"]),
    ([*STUDY, "--k", "attn=0"], ["at least 1"]),
    ([*STUDY, "--task", "hellaswagg"], ["'hellaswagg'", "did you mean hellaswag"]),
    (["evaluate", "{ckpt}", "--task", "hellaswagg"], ["'hellaswagg'", "did you mean hellaswag"]),
    (["table", "{cube}", "--step", "-1"], ["--step -1"]),
]


@pytest.mark.parametrize("args,needles", SWEEP, ids=[" ".join(a[:1] + a[-2:]) for a, _ in SWEEP])
def test_every_option_is_checked(ckpt, cube, tmp_path, args, needles):
    (tmp_path / "file").write_text("")
    fill = dict(tmp=tmp_path, ckpt=ckpt, cube=cube, file=tmp_path / "file")
    refused([a.format(**fill) for a in args], *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


# ---- 8. symlinks ----------------------------------------------------------------------------------

def _link(tmp_path: Path, target: Path, name: str = "link") -> Path:
    target.mkdir(parents=True, exist_ok=True)
    link = tmp_path / name
    link.symlink_to(target, target_is_directory=True)
    return link


def test_score_into_a_link_to_an_empty_folder(ckpt, tmp_path):
    """`--out link.zarr` (a link to an empty folder) failed with NotADirectoryError."""
    link = _link(tmp_path, tmp_path / "empty", "link.zarr")
    code, out, err = run("score", f"local:{ckpt}", "--out", link, *FAST)
    assert code == 0, out + err
    assert link.is_symlink() and (tmp_path / "empty" / "zarr.json").exists()
    code, out, err = run("score", f"local:{ckpt}", "--out", link, *FAST)
    assert code == 0 and "0 cells written" in err + out and "1 already there" in err + out


def test_score_into_a_link_to_a_complete_cube(ckpt, cube, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(cube, copy)
    link = tmp_path / "link.zarr"
    link.symlink_to(copy, target_is_directory=True)
    code, out, err = run("score", f"local:{ckpt}", "--out", link, *FAST)
    assert code == 0 and "0 cells written" in err + out, out + err
    code, out, err = run("check", link)
    assert code == 0, out + err


def test_drop_into_a_link(ckpt, tmp_path):
    link = _link(tmp_path, tmp_path / "target")
    code, out, err = run("drop", ckpt, "--attn", "1", "--out", link)
    assert code == 0, out + err
    assert link.is_symlink() and (tmp_path / "target" / "config.json").exists()


def test_figures_into_a_link(cube, tmp_path):
    link = _link(tmp_path, tmp_path / "target")
    code, out, err = run("figures", cube, "--out", link)
    assert code == 0, out + err
    assert link.is_symlink() and list((tmp_path / "target").glob("*.png"))


@pytest.mark.slow  # lm-eval
def test_evaluate_into_a_link(ckpt, tmp_path):
    link = _link(tmp_path, tmp_path / "target", "results.zarr")
    code, out, err = run("evaluate", ckpt, "--limit", "1", "--out", link)
    assert code == 0, out + err
    assert link.is_symlink() and (tmp_path / "target" / "current").exists()


@pytest.mark.slow  # lm-eval and timed generations
def test_study_into_a_link(ckpt, cube, tmp_path):
    link = _link(tmp_path, tmp_path / "target")
    code, out, err = run("study", ckpt, "--store", cube, "--dataset", "math", "--out", link, "--k", "block=1",
                         "--limit", "1", "--repeats", "2", "--prompt", "8", "--new", "8",
                         "--ppl-samples", "0")
    assert code == 0, out + err
    assert link.is_symlink() and (tmp_path / "target" / "table.csv").exists()


def test_a_link_loop_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    refused(["drop", tmp_path, "--attn", "1", "--out", tmp_path / "a"], "--out", "symlink")


def test_default_timing_lengths_fit_the_model():
    """Unset --prompt/--new are the study's 2048 each, cut to half the model's positions where those
    are fewer (Pythia's 2048: 1024 + 1024); set values are kept and checked against the positions."""
    from redundancy.study.chain import timing_lengths

    assert timing_lengths(None, None, None) == (2048, 2048)
    assert timing_lengths(None, None, 8192) == (2048, 2048)
    assert timing_lengths(None, None, 2048) == (1024, 1024)
    assert timing_lengths(None, None, 256) == (128, 128)
    assert timing_lengths(300, None, 256) == (300, 128)  # then refused: 428 > 256
