"""What the hub really serves, through the real huggingface_hub client and the local hub server.

The repo below reproduces faults reported upstream (sources/_integrity.py cites each thread):
step0 == step1 (EleutherAI/pythia#83); a non-final step serving the final weights (pythia#195,
#205); a step sharing one shard, not all, with the final model (pythia#206); plus a step whose
config changed vocabulary and a revision uploaded without tokenizer files. The hub side (LFS
sha256 per file in the tree listing, git blob ids) is what tests/_fakehub.py serves, as the hub does.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import analyses
from redundancy import open_cube
from redundancy.cli import app

from _fakehub import FakeHub
from _models import tiny_model
from _support import shared_tokenizer as make_tokenizer
from _support import stored_scores, whole_figure

REPO = "EleutherAI/pythia-flawed"
FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4", "--dtype", "float32"]


def _save(model, folder: Path, tokenizer=True) -> None:
    model.save_pretrained(folder, max_shard_size="200KB")  # sharded, like every large history
    if tokenizer:
        make_tokenizer().save_pretrained(folder)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    repo = root / REPO
    for step in (1, 4, 16):
        _save(tiny_model("llama", seed=step, vocab=512), repo / f"step{step}")
    shards = sorted(p.name for p in (repo / "step16").glob("model-*.safetensors"))
    assert len(shards) >= 2
    shutil.copytree(repo / "step1", repo / "step0")  # pythia#83
    shutil.copytree(repo / "step16", repo / "step2")  # pythia#205: the final weights under step2
    shutil.copy(repo / "step16" / shards[0], repo / "step4" / shards[0])  # pythia#206: one shard shared
    _save(tiny_model("llama", seed=8, vocab=640), repo / "step8")  # config drift: another vocabulary
    _save(tiny_model("llama", seed=9, vocab=512), repo / "step9", tokenizer=False)
    shutil.copytree(repo / "step16", repo / "main")
    return root


def run(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def _flags(out: str) -> dict[int, str]:
    rows = [ln for ln in out.splitlines()[1:] if ln[:9].strip().isdigit()]
    return {int(ln.split()[0]): ln[ln.index("MB") + 2:].strip() for ln in rows}


def test_list_shows_every_flag(hub_root, env):
    with FakeHub(hub_root) as hub:
        code, out = run("list", REPO, "--preset", "pythia", "--endpoint", hub.endpoint)
    assert code == 0, out
    flags = _flags(out)
    assert flags[1] == "duplicate of step 0" and flags[0] == ""
    assert flags[2].startswith("identical to the final step")
    assert "model-00001" in flags[4] and "with step 16" in flags[4]  # partial, and which file
    assert "with step 4" in flags[16]  # the final shares that shard too: flagged on both sides
    assert flags[8] == "config drift: vocab_size 640 (the series: 512)"
    assert flags[9] == "no tokenizer: uses step16's"
    assert not any(m == "GET" and p.endswith(".safetensors") for m, p in hub.requests)  # no weights


@pytest.mark.slow  # two crawls, ~5 s
def test_crawl_records_flags_and_keeps_finished_cells(hub_root, env):
    with FakeHub(hub_root) as hub:
        code, out = run("crawl", REPO, "--preset", "pythia", "--endpoint", hub.endpoint, "--step", "9",
                        "--out", env / "c.zarr", *FAST)  # steps 0, 9 and 16 (first and last always)
        assert code == 0, out
        assert "step 9 (step9): no tokenizer: uses step16's" in out  # reported before scoring
        assert "step 9: step9 has no tokenizer files; using step16's" in out  # and when it is scored
        done = {p: p.read_bytes() for p in (env / "c.zarr" / "cells").rglob("*") if p.is_file()}
        code, out = run(
            "crawl", REPO, "--preset", "pythia", "--endpoint", hub.endpoint, "--out", env / "c.zarr", *FAST
        )
        assert code == 0, out
    assert "step 8 (step8): config drift: vocab_size 640" in out
    assert all(p.read_bytes() == b for p, b in done.items())  # finished cells kept byte for byte
    cube = open_cube(env / "c.zarr").squeeze("dataset")
    at = lambda var, step: str(cube[var].sel(step=step).item())  # noqa: E731
    assert at("identical_to_final", 2) == "true" and at("duplicate_of", 2) == "16"
    assert at("duplicate_of", 1) == "0" and at("partial_duplicate_of", 4) == "16"
    assert at("config_drift", 8).startswith("vocab_size 640") and at("tokenizer_from", 9) == "step16"
    np.testing.assert_array_equal(cube.importance.sel(step=2).values, cube.importance.sel(step=16).values)
    assert not cube.importance.isnull().any()
    assert cube.flagged.squeeze("model").sel(step=2).item() and not cube.flagged.sel(step=16).item()


def test_dynamics_leave_out_flagged_steps_and_heatmaps_mark_them(hub_root, env):
    with FakeHub(hub_root) as hub:
        code, out = run(
            "crawl",
            REPO,
            "--preset",
            "pythia",
            "--endpoint",
            hub.endpoint,
            "--step",
            "2",
            "--out",
            env / "c.zarr",
            *FAST,
        )
    assert code == 0, out
    cube = open_cube(env / "c.zarr")
    imp = cube.importance.squeeze(["model", "dataset"]).mean("sample")
    assert analyses.trend(imp)["step"].values.tolist() == [0, 16]  # step 2 (= final) left out
    assert analyses.trend(imp, keep_flagged=True)["step"].values.tolist() == [0, 2, 16]
    notes = analyses.step_flags(cube.squeeze(["model", "dataset"]))
    assert notes.sel(step=2).item() == "= final?" and notes.sel(step=0).item() == ""
    paths = analyses.heatmaps(cube, env / "figs")  # one model, one dataset: one PNG and one PDF
    names = [f"heatmap_EleutherAI-pythia-flawed_math_importance.{x}" for x in ("png", "pdf")]
    assert [p.name for p in paths] == names and all(whole_figure(p) for p in paths)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _bin_only(folder: Path, state: dict, config) -> None:
    """A revision as old uploads hold it: config, tokenizer and pytorch_model.bin, no safetensors."""
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    import torch

    torch.save(state, folder / "pytorch_model.bin")


def test_bin_only_revisions_load_with_weights_only(tmp_path, env):
    models = {s: tiny_model("llama", seed=s, vocab=512) for s in (1, 2)}
    for s, m in models.items():
        _bin_only(tmp_path / "hub/org/bin-history" / f"step{s}", m.state_dict(), m.config)
    shutil.copytree(tmp_path / "hub/org/bin-history/step2", tmp_path / "hub/org/bin-history/main")
    marker = tmp_path / "pwned"
    evil = {**models[1].state_dict(), "lm_head.extra": _Exploit(marker)}
    _bin_only(tmp_path / "hub/org/bin-evil/step1", evil, models[1].config)
    shutil.copytree(tmp_path / "hub/org/bin-evil/step1", tmp_path / "hub/org/bin-evil/main")
    with FakeHub(tmp_path / "hub") as hub:
        code, out = run(
            "crawl",
            "org/bin-history",
            "--preset",
            "pythia",
            "--endpoint",
            hub.endpoint,
            "--out",
            env / "ok.zarr",
            *FAST,
        )
        assert code == 0, out
        code, out = run(
            "crawl",
            "org/bin-evil",
            "--preset",
            "pythia",
            "--endpoint",
            hub.endpoint,
            "--out",
            env / "evil.zarr",
            *FAST,
        )
    ok = open_cube(env / "ok.zarr").importance.sel(dataset="math").squeeze("model")
    for s in (1, 2):  # each step's cells hold its own .bin weights, scored as a folder of them scores
        want = stored_scores(tmp_path / "hub/org/bin-history" / f"step{s}")
        np.testing.assert_allclose(ok.sel(step=s).values, want, rtol=0, atol=1e-6)
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "refused unread" in errors[0] and "Traceback" not in out
    assert not marker.exists()
