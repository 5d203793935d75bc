"""Every kind of published history through the real huggingface_hub client and the local hub server:
the new namings, one repo per step (listed with the hub's model search, paginated), and multi-stage
histories whose stages restart their step counts.

Names follow the sources in redundancy/data/series_presets.yaml: Olmo-3-1125-32B card (stage names), SmolLM3
checkpoints README (commit 8007a2c), bigscience/bloom-intermediate card, stanford-crfm/mistral#123,
LLM360/K2 card, HuggingFaceFW/ablation-model-fineweb-edu card, OpenCoder-1.5B-Base-Checkpoints card,
TinyLlama-1.1B-intermediate-step-* repo names.
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

FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4", "--dtype", "float32"]
NAMINGS = {  # preset -> (repo, branch names, expected (step, stage) in order)
    "olmo3": (
        "allenai/Olmo-3-tiny",
        [
            "stage1-step0",
            "stage1-step1000",
            "stage2-ingredient1-step0",
            "stage2-ingredient1-step500",
            "stage3-step100",
        ],
        [
            (0, "stage1"),
            (1000, "stage1"),
            (1001, "stage2-ingredient1"),
            (1501, "stage2-ingredient1"),
            (1602, "stage3"),
        ],
    ),
    "smollm3": (
        "HuggingFaceTB/SmolLM3-tiny-checkpoints",
        ["stage1-step-0", "stage1-step-40000", "stage2-step-3450000", "stage3-step-4200000"],
        [(0, "stage1"), (40000, "stage1"), (3450000, "stage2"), (4200000, "stage3")],
    ),
    "bloom": (
        "bigscience/bloom-tiny-intermediate",
        ["global_step1000", "global_step2000"],
        [(1000, ""), (2000, "")],
    ),
    "crfm-gpt2": (
        "stanford-crfm/alias-gpt2-tiny-x21",
        ["checkpoint-0", "checkpoint-100"],
        [(0, ""), (100, "")],
    ),
    "k2": ("LLM360/K2-tiny", ["ckpt_000", "ckpt_001"], [(0, ""), (1, "")]),
    "fineweb-ablation": (
        "HuggingFaceFW/ablation-tiny",
        ["step-001000-2BT", "step-002000-4BT"],
        [(1000, ""), (2000, "")],
    ),
    "opencoder": (
        "OpenCoder-LLM/OpenCoder-tiny-Checkpoints",
        ["pretrain_iter_0001000", "pretrain_iter_0002000", "anneal_iter_0001000"],
        [(1000, "pretrain"), (2000, "pretrain"), (3001, "anneal")],
    ),
}
TINYLLAMA = [
    "TinyLlama-1.1B-intermediate-step-480k-1T",
    "TinyLlama-1.1B-intermediate-step-715k-1.5T",
    "TinyLlama-1.1B-intermediate-step-955k-token-2T",
]


def _checkpoint(folder: Path, seed: int) -> None:
    tiny_model("llama", seed=seed, vocab=512).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    for preset, (repo, names, _) in NAMINGS.items():
        for i, name in enumerate(names):
            _checkpoint(root / repo / name, seed=i)
        shutil.copytree(root / repo / names[-1], root / repo / "main")
    for i, name in enumerate(TINYLLAMA + ["TinyLlama-1.1B-Chat-v1.0"]):  # the chat model is no step
        _checkpoint(root / "TinyLlama" / name / "main", seed=10 + i)
    return root


def run(*args):
    r = CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)
    return r.exit_code, r.output


def _rows(out: str) -> list[list[str]]:
    return [ln.split() for ln in out.splitlines()[1:] if ln[:9].strip().isdigit()]


@pytest.mark.parametrize("preset", list(NAMINGS))
def test_every_new_naming_is_listed(preset, hub_root, env):
    repo, names, want = NAMINGS[preset]
    with FakeHub(hub_root) as hub:
        code, out = run("list", repo, "--preset", preset, "--endpoint", hub.endpoint)
    assert code == 0, out
    rows = _rows(out)
    assert [int(r[0]) for r in rows] == [s for s, _ in want]
    assert [r[2] for r in rows] == names  # the hub's names, in training order


def test_tokens_from_the_step_and_cumulative_over_restarting_stages(hub_root, env):
    from redundancy import list_checkpoints

    with FakeHub(hub_root) as hub:
        olmo3 = list_checkpoints(NAMINGS["olmo3"][0], preset="olmo3", endpoint=hub.endpoint)
        fineweb = list_checkpoints(NAMINGS["fineweb-ablation"][0], preset="fineweb-ablation",
                                   endpoint=hub.endpoint)
    tps = 4194304
    assert [c.tokens for c in olmo3] == [0, 1000 * tps, 1000 * tps, 1500 * tps, 1600 * tps]
    assert [c.stage_step for c in olmo3] == [0, 1000, 0, 500, 100]
    assert [c.tokens for c in fineweb] == [2e9, 4e9]  # in the name, no tokens per step to refine them


def test_one_repo_per_step_listed_by_author_and_crawled(hub_root, env):
    with FakeHub(hub_root) as hub:
        code, out = run("list", "TinyLlama", "--preset", "tinyllama", "--endpoint", hub.endpoint)
        assert code == 0, out
        assert [int(r[0]) for r in _rows(out)] == [480000, 715000, 955000]
        assert [r[1] for r in _rows(out)] == ["1007B", "1499B", "2003B"]  # 2,097,152 per step, not "1T"
        searches = [p for m, p in hub.requests if p == "/api/models"]
        assert len(searches) == 2  # two pages of 2 (three steps and the chat model), linked by the server
        code, out = run(
            "crawl",
            "TinyLlama",
            "--preset",
            "tinyllama",
            "--endpoint",
            hub.endpoint,
            "--out",
            env / "t.zarr",
            *FAST,
        )
        assert code == 0, out
        explicit = ",".join(f"TinyLlama/{n}" for n in TINYLLAMA[:2])
        code, out = run("list", explicit, "--preset", "tinyllama", "--endpoint", hub.endpoint)
        assert code == 0 and [int(r[0]) for r in _rows(out)] == [480000, 715000]
    cube = open_cube(env / "t.zarr")
    assert cube["model"].values.tolist() == ["TinyLlama/tinyllama"]
    assert cube.step.values.tolist() == [480000, 715000, 955000]
    for step, name in zip((480000, 715000, 955000), TINYLLAMA):  # each step from its own repo's weights
        got = cube.importance.sel(step=step, dataset="math").squeeze("model").values
        want = stored_scores(hub_root / "TinyLlama" / name / "main")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert len(set(cube.revision.squeeze(["model", "dataset"]).values)) == 3  # one commit per repo


def test_two_stages_with_equal_step_numbers_never_share_a_cell(hub_root, env):
    """OpenCoder: pretrain_iter_0001000 and anneal_iter_0001000 are two checkpoints, two cells."""
    repo = NAMINGS["opencoder"][0]
    with FakeHub(hub_root) as hub:
        code, out = run(
            "crawl", repo, "--preset", "opencoder", "--endpoint", hub.endpoint, "--out", env / "o.zarr", *FAST
        )
        assert code == 0, out
        code, out = run(
            "list", repo, "--preset", "opencoder", "--stage", "anneal", "--endpoint", hub.endpoint
        )
        assert code == 0 and [r[2] for r in _rows(out)] == ["anneal_iter_0001000"]
        code, out = run("list", repo, "--preset", "opencoder", "--stage", "decay", "--endpoint", hub.endpoint)
        assert code == 1 and "its stages: pretrain, anneal" in out
    cube = open_cube(env / "o.zarr").squeeze("model")
    assert cube.step.values.tolist() == [1000, 2000, 3001]
    assert cube.stage.values.tolist() == ["pretrain", "pretrain", "anneal"]
    # 4,194,304 tokens per step; the anneal stage restarts at iteration 0 after pretrain's 2000: 2000 + 1000
    assert cube.tokens.values.tolist() == [1000 * 4194304, 2000 * 4194304, 3000 * 4194304]
    names = NAMINGS["opencoder"][1]
    for step, name in zip((1000, 2000, 3001), names):  # each cell from its own branch, not a namesake's
        got = cube.importance.sel(step=step, dataset="math").values
        np.testing.assert_allclose(got, stored_scores(hub_root / repo / name), rtol=0, atol=1e-6)
    paths = analyses.heatmaps(cube.expand_dims("model"), env / "figs")  # one model, one dataset
    figs = [f"heatmap_OpenCoder-LLM-OpenCoder-tiny-Checkpoints_math_importance.{x}" for x in ("png", "pdf")]
    assert [p.name for p in paths] == figs and all(whole_figure(p) for p in paths)
