"""One reading of a checkpoint's step, tokens and stage (sources/_steps.py read_step), used by local
series, `study` and `evaluate`: the names public histories use, as local folders and as a Hugging Face
cache tree; files that say the step; names refused rather than guessed."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from redundancy.cli import app
from redundancy.errors import SeriesError
from redundancy.sources import open_series, read_step
from redundancy.sources._local import local_checkpoints

from _models import tiny_model
from _support import shared_tokenizer

runner = CliRunner()
FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]

# name -> (step, tokens, stage): every naming read_step's docstring cites
NAMES = {
    "1000": (1000, None, ""),
    "step1000": (1000, None, ""),  # Pythia branches
    "step-1000": (1000, None, ""),  # SmolLM2 branches, tests/conftest.py write_series
    "step1000-tokens4B": (1000, 4e9, ""),  # OLMo
    "step30000-tokens126B": (30000, 126e9, ""),
    "stage1-step1000-tokens5B": (1000, 5e9, "stage1"),  # OLMo-2
    "stage2-ingredient1-step1000-tokens5B": (1000, 5e9, "stage2-ingredient1"),
    "stage1-step1000": (1000, None, "stage1"),  # OLMo-3
    "stage2-step-1000": (1000, None, "stage2"),  # SmolLM3
    "neo_7b-step-480k-token-1007B": (480000, 1007e9, ""),  # MAP-Neo / K2-like
    "TinyLlama-1.1B-intermediate-step-480k-1T": (480000, 1e12, ""),
    "TinyLlama-1.1B-intermediate-step-715k-1.5T": (715000, 1.5e12, ""),
    "TinyLlama-1.1B-intermediate-step-955k-token-2T": (955000, 2e12, ""),
    "step-1000-10BT": (1000, 10e9, ""),  # FineWeb ablations
    "checkpoint-1000": (1000, None, ""),  # HF Trainer
    "global_step1000": (1000, None, ""),  # DeepSpeed
    "iter_0001000": (1000, None, ""),  # Megatron-LM
    "iter_1000": (1000, None, ""),
    "pretrain_iter_0001000": (1000, None, "pretrain"),  # OpenCoder
    "ckpt_012": (12, None, ""),  # LLM360 Amber / K2
    "model-1000": (1000, None, ""),
}
OLMO = {"step1000-tokens4B": (1000, 4e9), "step2000-tokens8B": (2000, 8e9),
        "step30000-tokens126B": (30000, 126e9)}


def _stub(folder: Path) -> Path:
    """A folder local series list (config.json); enough for reading steps, not for scoring."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def _real(folder: Path, seed: int) -> Path:
    """A tiny llama with a tokenizer: what `score` loads."""
    tiny_model("llama", seed=seed, vocab=512).save_pretrained(folder)
    shared_tokenizer().save_pretrained(folder)
    return folder


def cache_tree(root: Path, repo: str, branches: dict[str, Path | None], extra: list[Path] = ()) -> Path:
    """A Hugging Face cache tree as huggingface_hub lays it out: refs/<branch> holding a commit sha,
    snapshots/<sha>/<file> linked to blobs/<hash>. branches: name -> source folder, or None for a
    branch pointing at the previous branch's commit (`main`); extra: snapshots no branch points at."""
    tree = root / ("models--" + repo.replace("/", "--"))
    (tree / "refs").mkdir(parents=True)
    sha = None
    for name, src in [*branches.items(), *((None, e) for e in extra)]:
        if src is not None:
            sha = hashlib.sha1(str(src).encode()).hexdigest()
            _snapshot(tree, sha, src)
        if name is not None:
            (tree / "refs" / name).write_text(sha)
    return tree


def _snapshot(tree: Path, sha: str, src: Path) -> None:
    snap = tree / "snapshots" / sha
    snap.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        blob = tree / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(Path("../../blobs") / blob.name)


def _score(spec: str, out: Path, *extra: str):
    r = runner.invoke(app, ["score", spec, "--out", str(out), *FAST, *extra])
    return r.exit_code, r.output


def _error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


@pytest.mark.parametrize("name", list(NAMES))
def test_public_names_as_local_folders(name, tmp_path):
    folder = _stub(tmp_path / "series" / name)
    (ckpt,) = local_checkpoints(tmp_path / "series")
    step, tokens, stage = NAMES[name]
    assert (ckpt.step, ckpt.tokens, ckpt.stage) == (step, tokens, stage)
    assert ckpt.revision == name and ckpt.path == folder


@pytest.mark.parametrize("name", list(NAMES))
def test_public_names_as_cache_branches(name, tmp_path):
    """In a cache tree a snapshot is a commit sha: its step comes from the branch pointing at it."""
    src = _stub(tmp_path / "src")
    tree = cache_tree(tmp_path / "hub", "org/model", {name: src, "main": None})
    (ckpt,) = local_checkpoints(tree)
    step, tokens, stage = NAMES[name]
    assert (ckpt.step, ckpt.tokens, ckpt.stage) == (step, tokens, stage)
    assert ckpt.revision == name and ckpt.commit == ckpt.path.name
    assert read_step(ckpt.path).step == step  # one snapshot alone reads the same


def test_olmo_folders_scored_under_their_steps_and_tokens(tmp_path):
    from redundancy import open_cube

    for seed, name in enumerate(OLMO):
        _real(tmp_path / "olmo" / name, seed)
    code, out = _score(f"local:{tmp_path / 'olmo'}", tmp_path / "c.zarr")
    assert code == 0, out
    cube = open_cube(tmp_path / "c.zarr")
    assert cube["step"].values.tolist() == [1000, 2000, 30000]  # not 4, 8, 126
    np.testing.assert_array_equal(np.ravel(cube["tokens"].sel(model="olmo").values), [4e9, 8e9, 126e9])


def test_cache_tree_scored_under_its_branches(tmp_path):
    from redundancy import open_cube

    src = {name: _real(tmp_path / "src" / name, seed) for seed, name in enumerate(list(OLMO)[:2])}
    tree = cache_tree(tmp_path / "hub", "allenai/OLMo-tiny", {**src, "main": None})
    code, out = _score(f"local:{tree}", tmp_path / "c.zarr")
    assert code == 0, out
    cube = open_cube(tmp_path / "c.zarr")
    assert cube["model"].values.tolist() == ["allenai/OLMo-tiny"]
    assert cube["step"].values.tolist() == [1000, 2000]  # not digits of the commit shas
    np.testing.assert_array_equal(np.ravel(cube["tokens"].sel(model="allenai/OLMo-tiny").values), [4e9, 8e9])


def test_snapshot_no_branch_points_at_is_refused(tmp_path):
    tree = cache_tree(tmp_path / "hub", "org/model", {"step1000": _stub(tmp_path / "a")},
                      extra=[_stub(tmp_path / "b")])
    with pytest.raises(SeriesError, match="no branch in .*refs points at"):
        local_checkpoints(tree)


def test_two_unmarked_numbers_refused_in_one_line_then_read_with_pattern(tmp_path):
    for seed, name in enumerate(["run3-1000", "run3-2000"]):
        _real(tmp_path / "runs" / name, seed)
    code, out = _score(f"local:{tmp_path / 'runs'}", tmp_path / "c.zarr")
    (line,) = _error_lines(out)
    assert code == 1 and "run3-1000, run3-2000" in line and "none marked as the step" in line
    assert "checkpoint.json" in line and "--pattern" in line
    pattern = r"^run\d+-(?P<step>\d+)$"
    code, out = _score(f"local:{tmp_path / 'runs'}", tmp_path / "c.zarr", "--pattern", pattern)
    assert code == 0, out
    from redundancy import open_cube

    assert open_cube(tmp_path / "c.zarr")["step"].values.tolist() == [1000, 2000]


def test_preset_and_pattern_reach_local_series(tmp_path):
    for name in OLMO:
        _stub(tmp_path / "olmo" / name)
    # the olmo preset refines the names' whole billions to step x 4,194,304 (series_presets.yaml)
    series = open_series(f"local:{tmp_path / 'olmo'}", preset="olmo")
    assert [c.tokens for c in series.checkpoints] == [s * 4194304.0 for s in (1000, 2000, 30000)]
    series = open_series(f"local:{tmp_path / 'olmo'}", pattern=r"^step(?P<step>\d+)-", tokens_per_step=10.0)
    assert [c.tokens for c in series.checkpoints] == [10000.0, 20000.0, 300000.0]
    with pytest.raises(SeriesError, match="does not match the pattern"):
        open_series(f"local:{tmp_path / 'olmo'}", pattern=r"^ckpt_(?P<step>\d+)$")
    with pytest.raises(SeriesError, match="every select checkpoints of hub histories"):
        open_series(f"local:{tmp_path / 'olmo'}", every="500B")


def test_olmo2_stages_along_one_sequence(tmp_path):
    """OLMo-2: stage-1 branches with and without the prefix are one stage; the ingredient soup
    restarts its steps and is placed after stage 1 (sources/_stages.py)."""
    for name in ["stage1-step0-tokens0B", "step150-tokens1B", "stage1-step300-tokens2B",
                 "stage2-ingredient1-step10-tokens50B"]:
        _stub(tmp_path / "olmo2" / name)
    got = [(c.step, c.stage, c.stage_step, c.tokens) for c in local_checkpoints(tmp_path / "olmo2")]
    assert got == [(0, "stage1", 0, 0.0), (150, "stage1", 150, 1e9), (300, "stage1", 300, 2e9),
                   (311, "stage2-ingredient1", 10, 52e9)]


def test_files_say_the_step_before_the_name(tmp_path):
    ours = _stub(tmp_path / "step5")
    (ours / "checkpoint.json").write_text(json.dumps({"step": 7, "tokens": 70}))
    assert (read_step(ours).step, read_step(ours).tokens) == (7, 70)
    trainer = _stub(tmp_path / "checkpoint-1000")
    state = {"global_step": 1000, "num_input_tokens_seen": 123}
    (trainer / "trainer_state.json").write_text(json.dumps(state))
    assert (read_step(trainer).step, read_step(trainer).tokens) == (1000, 123.0)
    megatron = _stub(tmp_path / "converted")
    (megatron / "latest_checkpointed_iteration.txt").write_text("2000\n")
    assert read_step(megatron).step == 2000
    (megatron / "latest_checkpointed_iteration.txt").write_text("release")
    with pytest.raises(SeriesError, match="not an iteration"):
        read_step(megatron)


def test_study_and_evaluate_read_the_cubes_step(tmp_path):
    """`study` and `evaluate` read the step as `score local:` does (they called checkpoint_step, which
    gave 0 without checkpoint.json)."""
    assert read_step(_stub(tmp_path / "step1000-tokens4B")).step == 1000
    ours = _stub(tmp_path / "final")
    (ours / "checkpoint.json").write_text(json.dumps({"step": 300, "tokens": 3e6}))
    assert read_step(ours).step == 300


def test_study_files_rows_under_the_folders_step(tmp_path, monkeypatch):
    """The library decides the step (study.study_target, read as `score local:` reads it); the CLI
    leaves it to the library unless --step is given."""
    from redundancy.cli import _study
    from redundancy.study import study_target

    folder = _stub(tmp_path / "step2000-tokens8B")
    assert study_target(folder) == ("step2000-tokens8B", 2000)
    assert study_target(folder, model="m", step=7) == ("m", 7)
    with pytest.raises(SeriesError):
        study_target(_stub(tmp_path / "run3-1000"))  # nothing says its step
    seen = {}
    monkeypatch.setattr(_study, "study_command", lambda *a, **kw: seen.update(kw))
    args = ["study", str(folder), "--store", str(tmp_path / "c.zarr"), "--out", str(tmp_path / "s")]
    assert runner.invoke(app, args).exit_code == 0
    assert seen["step"] is None and seen["model"] is None
    assert runner.invoke(app, [*args, "--step", "5"]).exit_code == 0 and seen["step"] == 5


def test_evaluate_stores_rows_under_the_folders_step(tmp_path, monkeypatch):
    import redundancy.study as study
    from redundancy.study import open_results

    monkeypatch.setattr(study, "evaluate_with_stderr", lambda *a, **kw: ({"t": 0.5}, {"t": 0.01}))
    folder = _real(tmp_path / "step1000-tokens4B", 0)
    r = runner.invoke(app, ["evaluate", str(folder), "--out", str(tmp_path / "r.zarr")])
    assert r.exit_code == 0, r.output
    assert open_results(tmp_path / "r.zarr")["step"].values.tolist() == [1000]
    # an unreadable name fails before any evaluation, saying how to give the step
    unread = _stub(tmp_path / "run3-1000")
    r = runner.invoke(app, ["evaluate", str(unread), "--out", str(tmp_path / "r.zarr")])
    (line,) = _error_lines(r.output)
    assert r.exit_code == 1 and "run3-1000" in line and "--step N" in line


def test_ingredient_runs_are_not_chained(tmp_path):
    """OLMo-2's mid-training ingredients (stage2-ingredient1..3, from the OLMo-2 model card's branch
    list) are separate runs from the end of stage 1: never lined up one after another. Several at
    once are refused in one line; --stage keeps one, whose tokens follow stage 1's last."""
    from redundancy.errors import SeriesError
    from redundancy.sources import open_series

    names = ["stage1-step928000-tokens3893B", "stage1-step928646-tokens3896B",
             "stage2-ingredient1-step11931-tokens50B", "stage2-ingredient2-step11931-tokens50B",
             "stage2-ingredient3-step11931-tokens50B"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    with pytest.raises(SeriesError, match="stage2-ingredient1, stage2-ingredient2, stage2-ingredient3 are "
                                          "separate runs.*--stage stage1,stage2-ingredient1"):
        open_series(f"local:{tmp_path}")
    for k in (1, 3):
        series = open_series(f"local:{tmp_path}", stages=["stage1", f"stage2-ingredient{k}"])
        last = series.checkpoints[-1]
        assert last.stage == f"stage2-ingredient{k}" and last.tokens == (3896 + 50) * 1e9
        assert last.step == 928646 + 1 + 11931
