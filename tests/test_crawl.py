"""Crawl real-shaped hub histories through the real huggingface_hub client and a local hub server."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from redundancy import open_cube
from redundancy.cli import app
from redundancy.cube import CubeStore

from _fakehub import FakeHub
from _megatron_writer import write_megatron
from _models import tiny_model
from _support import make_tokenizer, stored_scores

FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4", "--dtype", "float32"]
NAMES = {  # preset -> (repo, branch names); the last name's weights are copied into "main"
    "pythia": ("EleutherAI/pythia-tiny", ["step0", "step1", "step2", "step4", "step8", "step32"]),
    "olmo": ("allenai/OLMo-tiny-hf", ["step0-tokens0B", "step1000-tokens4B", "step2000-tokens8B"]),
    "olmo2": ("allenai/OLMo-2-tiny", ["stage1-step0-tokens0B", "step150-tokens1B", "stage1-step300-tokens2B",
                                     "stage2-ingredient1-step10-tokens50B"]),
    "amber": ("LLM360/Amber-tiny", ["ckpt_000", "ckpt_001", "ckpt_002"]),
    "smollm2": ("HuggingFaceTB/SmolLM2-tiny-intermediate-checkpoints", ["step-0", "step-160000"]),
}


def _save(model, tok, folder: Path) -> None:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    tok = make_tokenizer()
    for preset, (repo, names) in NAMES.items():
        family = {"pythia": "gpt_neox", "olmo": "olmo", "olmo2": "olmo2"}.get(
            preset, "llama"
        )  # real model_types
        for i, name in enumerate(names):
            _save(tiny_model(family, seed=i, vocab=512), tok, root / repo / name)
        shutil.copytree(root / repo / names[-1], root / repo / "main")
    # Pythia#205: a later branch byte-identical to an earlier one
    shutil.copytree(root / "EleutherAI/pythia-tiny/step4", root / "EleutherAI/pythia-tiny/step16")
    neo = root / "m-a-p/neo_tiny_intermediate/main"
    for it in (10, 20):
        write_megatron(
            tiny_model("llama", seed=it, vocab=512),
            neo / f"iter_{it:07d}",
            tp=2,
            iteration=it,
            layout="core",
            consumed_samples=it * 4 + 3,
        )  # MAP-Neo: Megatron Core, TE extra state
        for r in range(2):  # optimizer state that must never be downloaded
            (neo / f"iter_{it:07d}" / f"mp_rank_{r:02d}" / "distrib_optim.pt").write_bytes(os.urandom(4096))
    tok.save_pretrained(root / "tokenizer")
    (root / "gated/model/main").mkdir(parents=True)
    shutil.copytree(root / "LLM360/Amber-tiny/ckpt_000", root / "gated/model/main", dirs_exist_ok=True)
    (root / "gated/model/gated").write_text("")
    return root


def run(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.mark.parametrize("preset", list(NAMES) + ["map-neo"])
def test_list_every_preset(preset, hub_root, env):
    repo = NAMES[preset][0] if preset != "map-neo" else "m-a-p/neo_tiny_intermediate"
    with FakeHub(hub_root) as hub:
        code, out = run("list", repo, "--preset", preset, "--endpoint", hub.endpoint)
    assert code == 0, out
    steps = [int(line.split()[0]) for line in out.splitlines()[1:]]
    want = {
        "pythia": [0, 1, 2, 4, 8, 16, 32],
        "olmo": [0, 1000, 2000],
        "olmo2": [0, 150, 300],
        "amber": [0, 1, 2],
        "smollm2": [0, 160000],
        "map-neo": [10, 20],
    }[preset]
    assert steps == want
    assert not any(m == "GET" and p.endswith((".safetensors", ".pt")) for m, p in hub.requests)  # no weights
    if preset == "pythia":
        assert "step 4" in [ln for ln in out.splitlines() if ln.split()[0] == "16"][0]  # duplicate marked
    if preset == "olmo":  # names round to whole billions; refined to 4,194,304 tokens per step
        assert "4.194B" in out and "8.389B" in out


@pytest.mark.slow  # two CLI runs over a dropped connection, ~6 s
def test_crawl_equals_local_scoring(hub_root, env):
    with FakeHub(hub_root, drop_after_bytes=2000, drop_times=2) as hub:  # connection dropped mid-file
        code, out = run(
            "crawl",
            "EleutherAI/pythia-tiny",
            "--preset",
            "pythia",
            "--endpoint",
            hub.endpoint,
            "--out",
            env / "hub.zarr",
            *FAST,
        )
    assert code == 0, out
    local = env / "local"  # the same checkpoints as local folders (without the "main" alias)
    shutil.copytree(hub_root / "EleutherAI/pythia-tiny", local, ignore=shutil.ignore_patterns("main"))
    code, out = run("score", f"local:{local}", "--out", env / "local.zarr", *FAST)
    assert code == 0, out
    a, b = open_cube(env / "hub.zarr"), open_cube(env / "local.zarr")
    a_steps = a.importance.sel(step=[0, 1, 2, 4, 8]).squeeze("model").values
    b_vals = b.importance.sel(step=[0, 1, 2, 4, 8]).squeeze("model").values
    np.testing.assert_array_equal(a_steps, b_vals)
    assert a.duplicate_of.sel(step=16).item() == "4"
    np.testing.assert_array_equal(a.importance.sel(step=16).values, a.importance.sel(step=4).values)
    assert not list((env / "hfcache").rglob("*.safetensors"))  # released after scoring


@pytest.mark.slow  # starts Ray
def test_crawl_on_ray_workers_equals_the_local_crawl(hub_root, env):
    """--executor ray: each worker downloads and scores its own checkpoints from the (local) hub."""
    with FakeHub(hub_root) as hub:
        for name, extra in (("one.zarr", []), ("ray.zarr", ["--executor", "ray", "--workers", "2"])):
            code, out = run(
                "crawl",
                "EleutherAI/pythia-tiny",
                "--preset",
                "pythia",
                "--endpoint",
                hub.endpoint,
                "--out",
                env / name,
                *FAST,
                *extra,
            )
            assert code == 0, out
    a, b = open_cube(env / "one.zarr"), open_cube(env / "ray.zarr")
    xr.testing.assert_equal(a.importance, b.importance)
    assert b.duplicate_of.sel(step=16).item() == "4"
    assert not list((env / "hfcache").rglob("*.safetensors"))  # each worker released what it scored


def test_map_neo_crawl_never_downloads_optimizer(hub_root, env):
    """Megatron Core layout, 2 ranks, read without `megatron` installed; tokens from the args'
    consumed_train_samples (tests/_megatron_writer.py cites Megatron's files)."""
    with FakeHub(hub_root) as hub:
        code, out = run(
            "crawl",
            "m-a-p/neo_tiny_intermediate",
            "--preset",
            "map-neo",
            "--endpoint",
            hub.endpoint,
            "--tokenizer",
            hub_root / "tokenizer",
            "--out",
            env / "neo.zarr",
            *FAST,
        )
        assert code == 0, out
        assert not [p for m, p in hub.requests if "distrib_optim" in p]
    cube = open_cube(env / "neo.zarr")
    assert cube.step.values.tolist() == [10, 20]
    assert cube.tokens.values.ravel().tolist() == [(10 * 4 + 3) * 256, (20 * 4 + 3) * 256]
    for it in (10, 20):  # the 2 ranks merged back into the model they were cut from, scored as such
        want = stored_scores(tiny_model("llama", seed=it, vocab=512), hub_root / "tokenizer")
        got = cube.importance.sel(step=it, dataset="math").squeeze("model").values
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_map_neo_every_500b_picks_every_25th_folder(tmp_path, env):
    """Folders every 2384 iterations of 1024 x 8192 tokens (~20B): 500B is the 25th."""
    repo = tmp_path / "hub" / "m-a-p" / "neo_grid" / "main"
    for k in range(1, 31):
        rank = repo / f"iter_{k * 2384:07d}" / "mp_rank_00"
        rank.mkdir(parents=True)
        (rank / "model_optim_rng.pt").write_bytes(k.to_bytes(4, "little"))  # listed, never read
    with FakeHub(tmp_path / "hub") as hub:
        code, out = run(
            "list", "m-a-p/neo_grid", "--preset", "map-neo", "--every", "500B", "--endpoint", hub.endpoint
        )
    assert code == 0, out
    assert [int(ln.split()[0]) for ln in out.splitlines()[1:]] == [2384, 25 * 2384, 30 * 2384]


def test_selection(hub_root, env):
    with FakeHub(hub_root) as hub:
        code, out = run(
            "list", "allenai/OLMo-tiny-hf", "--preset", "olmo", "--every", "8B", "--endpoint", hub.endpoint
        )
        assert code == 0 and [int(ln.split()[0]) for ln in out.splitlines()[1:]] == [0, 2000]
        code, out = run(
            "list", "EleutherAI/pythia-tiny", "--preset", "pythia", "--max", "3", "--endpoint", hub.endpoint
        )
        assert [int(ln.split()[0]) for ln in out.splitlines()[1:]] == [0, 4, 32]
        code, out = run(
            "list", "EleutherAI/pythia-tiny", "--preset", "pythia", "--step", "3", "--endpoint", hub.endpoint
        )
        assert code == 1 and "no checkpoint at step 3" in out


@pytest.mark.slow  # kills a crawl subprocess
def test_killed_crawl_resumes_and_offline_works_from_cache(hub_root, env):
    with FakeHub(hub_root) as hub:
        cmd = [
            sys.executable,
            "-m",
            "redundancy.cli",
            "crawl",
            "LLM360/Amber-tiny",
            "--preset",
            "amber",
            "--endpoint",
            hub.endpoint,
            "--out",
            str(env / "c.zarr"),
            "--keep",
            *FAST,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.time() + 120
        while time.time() < deadline and not CubeStore(env / "c.zarr").cell_paths():
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = len(CubeStore(env / "c.zarr").cell_paths())
        assert 1 <= done < 3
        code, out = run(*cmd[3:])  # the next run, in this process (what is killed is the subprocess)
        assert code == 0, out
        assert f"{3 - done} cells written" in out
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the server is gone; the cache holds everything
    cmd2 = [
        sys.executable,
        "-m",
        "redundancy.cli",
        "crawl",
        "LLM360/Amber-tiny",
        "--preset",
        "amber",
        "--out",
        str(env / "offline.zarr"),
        "--keep",
        *FAST,
    ]
    r = subprocess.run(cmd2, capture_output=True, text=True, env=offline)
    assert r.returncode == 0, r.stdout + r.stderr
    xr.testing.assert_equal(open_cube(env / "offline.zarr").importance, open_cube(env / "c.zarr").importance)


def test_errors_keep_finished_steps(hub_root, env, monkeypatch):
    with FakeHub(hub_root, token="secret") as hub:
        code, out = run("list", "nobody/nothing", "--preset", "pythia", "--endpoint", hub.endpoint)
        assert code == 1 and "not on the hub" in out
        code, out = run("list", "gated/model", "--pattern", r"^(?P<step>main)$", "--endpoint", hub.endpoint)
        assert code == 1 and "gated" in out
        code, out = run(
            "crawl",
            "LLM360/Amber-tiny",
            "--preset",
            "amber",
            "--endpoint",
            hub.endpoint,
            "--out",
            env / "e.zarr",
            "--max",
            "2",
            *FAST,
        )  # steps 0 and 2
        assert code == 0, out
        import redundancy.sources._fetch as fetch

        with monkeypatch.context() as m:  # a disk with 10 bytes free
            m.setattr(fetch.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
            code, out = run(
                "crawl",
                "LLM360/Amber-tiny",
                "--preset",
                "amber",
                "--endpoint",
                hub.endpoint,
                "--out",
                env / "e.zarr",
                *FAST,
            )
        assert code == 1 and "MB free in" in out
    before = sorted(p.name for p in CubeStore(env / "e.zarr").cell_paths())
    with FakeHub(hub_root, fail_all=True) as hub:
        code, out = run(
            "crawl",
            "LLM360/Amber-tiny",
            "--preset",
            "amber",
            "--endpoint",
            hub.endpoint,
            "--out",
            env / "e.zarr",
            *FAST,
        )
    assert code == 1 and "run again" in out
    assert sorted(p.name for p in CubeStore(env / "e.zarr").cell_paths()) == before


@pytest.mark.parametrize("preset", ["olmo", "olmo2", "smollm2"])
def test_crawl_other_namings(preset, hub_root, env):
    repo, _ = NAMES[preset]
    with FakeHub(hub_root) as hub:
        code, out = run(
            "crawl",
            repo,
            "--preset",
            preset,
            "--endpoint",
            hub.endpoint,
            "--max",
            "2",
            "--out",
            env / "c.zarr",
            *FAST,
        )
    assert code == 0, out
    cube = open_cube(env / "c.zarr")
    names = NAMES[preset][1]  # --max 2: the first and the last step (olmo2's stage-2 branch is no step)
    steps = {"olmo": [0, 2000], "olmo2": [0, 300], "smollm2": [0, 160000]}[preset]
    assert cube.step.values.tolist() == steps
    for step, name in zip(steps, (names[0], names[2] if preset == "olmo2" else names[-1])):
        want = stored_scores(hub_root / repo / name)  # each cell from its own branch's weights
        got = cube.importance.sel(step=step, dataset="math").squeeze("model").values
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert cube.revision.isel(dataset=0).str.len().squeeze().values.tolist() == [40, 40]  # commit shas


def test_public_listing_and_unknown_revision(hub_root, env):
    from redundancy import list_checkpoints
    from redundancy.errors import SeriesError
    from redundancy.sources._fetch import HubFetcher

    with FakeHub(hub_root) as hub:
        ckpts = list_checkpoints("EleutherAI/pythia-tiny", preset="pythia", endpoint=hub.endpoint)
        assert [c.step for c in ckpts] == [0, 1, 2, 4, 8, 16, 32]
        assert all(len(h) == 64 for c in ckpts for h in c.weight_hashes.values())  # LFS sha256
        assert ckpts[-2].duplicate_of == 4 and ckpts[-3].duplicate_of is None
        gone = dataclasses.replace(ckpts[0], commit="0" * 40)  # a revision the hub does not have
        with pytest.raises(SeriesError, match="revision not found"):
            HubFetcher(env / "hf", endpoint=hub.endpoint).fetch(gone)
