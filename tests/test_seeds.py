"""Suites of seeds: the analyses on a hand-made cube with values worked out by hand, the built-in suite
(three seeds of a small builtin:tiny, scored by the demo) in one cube, and a hub suite crawled through
the local hub server (PolyPythia-style repos, each with pythia's step branches)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import analyses
from redundancy import open_cube
from redundancy.cli import app

from _fakehub import FakeHub
from _models import tiny_model
from _support import make_tokenizer, stored_scores

# runs a, b, c at steps 0, 10, 20 over 4 layers
VALUES = [[[0.1, 0.4, 0.2, 0.3], [0.5, 0.1, 0.3, 0.2], [0.5, 0.1, 0.3, 0.2]],
          [[0.1, 0.2, 0.4, 0.3], [0.6, 0.1, 0.3, 0.2], [0.6, 0.1, 0.3, 0.2]],
          [[0.4, 0.3, 0.2, 0.1], [0.5, 0.2, 0.4, 0.1], [0.5, 0.2, 0.4, 0.1]]]


@pytest.fixture()
def scores() -> xr.DataArray:
    return xr.DataArray(np.array(VALUES), dims=("model", "step", "layer"),
                        coords={"model": ["a", "b", "c"], "step": [0, 10, 20], "layer": [0, 1, 2, 3]})


def test_spread_by_hand(scores):
    s = analyses.seed_spread(scores).sel(step=0, layer=0)  # 0.1, 0.1, 0.4
    assert float(s["mean"]) == pytest.approx(0.2)
    assert float(s["std"]) == pytest.approx(np.sqrt(0.03))  # ((0.1^2 + 0.1^2 + 0.2^2) / 2) ** 0.5
    assert (float(s["min"]), float(s["max"])) == pytest.approx((0.1, 0.4))
    assert float(s["cv"]) == pytest.approx(np.sqrt(0.03) / 0.2)


def test_rank_agreement_by_hand(scores):
    """Step 0 ranks: a 1 4 2 3, b 1 2 4 3, c 4 3 2 1; Spearman 1 - 6 sum d^2 / 60: ab 0.2, ac -0.4,
    bc -0.8, mean -1/3. Step 10: a = b 4 1 3 2, c 4 2 3 1: 1.0, 0.8, 0.8, mean 2.6/3."""
    got = analyses.seed_rank_agreement(scores)
    np.testing.assert_allclose(got.values, [-1 / 3, 2.6 / 3, 2.6 / 3])


def test_first_step_the_seeds_agree_by_hand(scores):
    """k=2 lowest: step 0 a {0, 2}, b {0, 1}, c {2, 3}; steps 10, 20 all {1, 3}. k=1: a, b layer 1,
    c layer 3 at steps 10 and 20: never."""
    assert analyses.seeds_agree(scores, k=2).values.tolist() == [False, True, True]
    assert float(analyses.first_step_seeds_agree(scores, k=2)) == 10
    assert np.isnan(float(analyses.first_step_seeds_agree(scores, k=1)))


@pytest.mark.slow  # the demo fixture
def test_builtin_suite_is_one_cube(demo_dir):
    cube = open_cube(demo_dir / "suite.zarr")
    assert cube["model"].values.tolist() == [f"builtin:tiny-seed{s}" for s in (0, 1, 2)]
    assert cube["seed"].values.tolist() == [0, 1, 2] and set(cube["seed_kind"].values) == {"seed"}
    assert set(cube["suite"].values) == {"tiny-seeds"}
    imp = cube.importance.sel(dataset="prose").mean("sample")
    assert not imp.isnull().any()
    spread = analyses.seed_spread(imp.sel(layer=imp.layer > 0))["std"]
    assert float(spread.max()) > 0  # three different runs, not three copies of one
    assert (demo_dir / "figures" / "seed_band_tiny-seeds.png").exists()


def test_hub_suite_crawled_into_one_cube(tmp_path, env):
    root = tmp_path / "hub"
    tok = make_tokenizer()
    for seed in (1, 2):
        for step in (0, 1000):
            folder = root / f"EleutherAI/pythia-tiny-seed{seed}/step{step}"
            tiny_model("gpt_neox", seed=10 * seed + step, vocab=512).save_pretrained(folder)
            tok.save_pretrained(folder)
        shutil.copytree(folder, root / f"EleutherAI/pythia-tiny-seed{seed}/main")
    repos = "EleutherAI/pythia-tiny-seed1,EleutherAI/pythia-tiny-seed2"
    fast = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4", "--dtype", "float32"]
    with FakeHub(root) as hub:
        r = CliRunner().invoke(
            app,
            [
                "score",
                f"suite:{repos}",
                "--preset",
                "pythia",
                "--endpoint",
                hub.endpoint,
                "--out",
                str(tmp_path / "s.zarr"),
                *fast,
            ],
        )
    assert r.exit_code == 0, r.output
    cube = open_cube(tmp_path / "s.zarr")
    assert cube["model"].values.tolist() == repos.split(",")
    assert cube["seed"].values.tolist() == [0, 1] and set(cube["suite"].values) == {"custom"}
    assert cube.step.values.tolist() == [0, 1000]
    for repo in repos.split(","):  # each run's cells from its own repo's weights
        for step in (0, 1000):
            got = cube.importance.sel(model=repo, step=step, dataset="math").values
            want = stored_scores(root / repo / f"step{step}")
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
