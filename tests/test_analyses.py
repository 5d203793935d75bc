"""Analyses on hand-made cubes: what a person computes by hand; numpy kernels agree with wrappers."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr

import analyses
from analyses.orders import order_kernel
from analyses.stability import rank_corr_kernel

LAYERS = [0, 1, 2, 3]


def _scores(values, dims=("module", "layer"), **coords):
    coords = {"module": ["attn", "mlp"], "layer": LAYERS, **coords}
    return xr.DataArray(np.asarray(values, float), dims=dims, coords={d: coords[d] for d in dims})


def test_drop_order_by_hand():
    s = _scores([[0.5, 0.1, 0.3, np.nan], [0.2, 0.9, 0.1, 0.4]])
    o = analyses.drop_order(s)
    assert o.dims == ("module", "rank")
    assert o.sel(module="attn").values.tolist() == [1, 2, 0, -1]  # NaN (past the depth) last, -1
    assert o.sel(module="mlp").values.tolist() == [2, 0, 3, 1]


def test_kernel_and_wrapper_agree():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 2, 4))
    da = xr.DataArray(raw, dims=("step", "module", "layer"), coords={"layer": [10, 11, 12, 13]})
    np.testing.assert_array_equal(
        analyses.drop_order(da).values, order_kernel(raw, np.array([10, 11, 12, 13]))
    )
    a, b = rng.random((5, 6)), rng.random((5, 6))
    want = [scipy.stats.spearmanr(a[i], b[i])[0] for i in range(5)]
    np.testing.assert_allclose(rank_corr_kernel(a, b), want)
    got = analyses.rank_correlation(
        xr.DataArray(a, dims=("x", "layer")), xr.DataArray(b, dims=("x", "layer"))
    )
    np.testing.assert_allclose(got.values, want)


def test_joint_order_carries_labels():
    s = _scores([[0.5, 0.1, 0.3, np.nan], [0.2, 0.9, 0.15, 0.4]])
    j = analyses.joint_order(s)
    pairs = list(zip(j.module.values.tolist(), j.layer.values.tolist()))
    assert pairs == [
        ("attn", 1),
        ("mlp", 2),
        ("mlp", 0),
        ("attn", 2),
        ("mlp", 3),
        ("attn", 0),
        ("mlp", 1),
        ("", -1),
    ]
    assert j.layer.max() < len(LAYERS)  # never an index past the layer count


def test_baselines():
    s = _scores([[0.5, 0.1, 0.3, np.nan], [0.2, 0.9, 0.1, 0.4]])
    assert analyses.reverse_order(s).sel(module="attn").values.tolist() == [2, 1, 0, -1]
    assert analyses.reverse_order(s).sel(module="mlp").values.tolist() == [3, 2, 1, 0]
    r1, r2 = analyses.random_order(s, seed=3), analyses.random_order(s, seed=3)
    assert (r1 == r2).all() and sorted(r1.sel(module="mlp").values) == LAYERS


def test_drop_sets_and_jaccard():
    s = _scores([0.3, 0.1, 0.2, 0.4], dims=("layer",))
    sets = analyses.drop_sets(analyses.drop_order(s), labels=np.array(LAYERS))
    assert sets.sel(k=2).values.tolist() == [False, True, True, False]
    a = xr.DataArray([True, True, False], dims="layer")
    b = xr.DataArray([True, False, True], dims="layer")
    assert float(analyses.jaccard(a, b)) == pytest.approx(1 / 3)


def test_stability_across_datasets():
    s = _scores(
        [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.4, 0.3], [0.4, 0.3, 0.2, 0.1]],
        dims=("dataset", "layer"),
        dataset=["a", "b", "c"],
    )
    corr = analyses.pairwise(s)
    assert corr.sel(dataset="a", dataset_2="c") == pytest.approx(-1.0)
    assert corr.sel(dataset="a", dataset_2="b") == pytest.approx(0.8)
    kendall = analyses.pairwise(s, method="kendall")
    assert kendall.sel(dataset="a", dataset_2="b") == pytest.approx(
        scipy.stats.kendalltau([1, 2, 3, 4], [1, 2, 4, 3])[0]
    )
    ov = analyses.drop_set_overlap(s)
    assert ov.sel(k=1, dataset="a", dataset_2="b") == 1.0  # both drop layer 0 first
    assert ov.sel(k=3, dataset="a", dataset_2="b") == pytest.approx(2 / 4)  # {0,1,2} vs {0,1,3}


def test_sample_counts():
    # layer 1 looks least important in the first 2 samples, layer 0 over all 8
    per = np.array([[0.5, 0.1, 0.9]] * 2 + [[0.1, 0.9, 0.9]] * 6)  # (sample, layer)
    da = xr.DataArray(per, dims=("sample", "layer"), coords={"layer": [0, 1, 2]})
    pm = analyses.prefix_means(da)
    assert pm["n_samples"].values.tolist() == [1, 2, 4, 8]
    np.testing.assert_allclose(pm.sel(n_samples=2).values, [0.5, 0.1, 0.9])
    assert float(analyses.samples_for_same_drop_set(da, k=1)) == 4
    boot = analyses.bootstrap_interval(da, n_boot=100)
    # means of the first n: n=1 is sample 0 itself; n=8: (2 x 0.5 + 6 x 0.1) / 8 = 0.2,
    # (2 x 0.1 + 6 x 0.9) / 8 = 0.7, 0.9
    np.testing.assert_allclose(boot["mean"].sel(n_samples=1).values, [0.5, 0.1, 0.9])
    np.testing.assert_allclose(boot["mean"].sel(n_samples=8).values, [0.2, 0.7, 0.9])
    # one sample drawn from all 8: layer 0 is 0.5 in ~1/4 of 100 draws, else 0.1; layer 1 0.1 in ~1/4, else
    # 0.9; both values hold more than 5 % of the draws, so the 90 % interval spans exactly the two
    np.testing.assert_allclose(boot["low"].sel(n_samples=1).values, [0.1, 0.1, 0.9])
    np.testing.assert_allclose(boot["high"].sel(n_samples=1).values, [0.5, 0.9, 0.9])
    # layer 2 is 0.9 in every sample: a zero-width interval at every n
    np.testing.assert_allclose(boot["low"].sel(layer=2).values, 0.9)
    np.testing.assert_allclose(boot["high"].sel(layer=2).values, 0.9)


def test_training_dynamics():
    imp = xr.DataArray(
        [[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.4, 0.3], [0.1, 0.2, 0.3, 0.4]],
        dims=("step", "layer"),
        coords={"step": [0, 10, 100], "layer": LAYERS},
    )
    assert analyses.corr_with_step(imp).values.tolist() == pytest.approx([-1.0, 0.8, 1.0])
    assert int(analyses.first_step_with_final_set(imp, k=2)) == 10
    cube = xr.concat([imp * 0.1, imp, imp * 2], dim="module").assign_coords(module=["attn", "mlp", "block"])
    obs = analyses.study_observation(cube)
    # layers 1-3: step 0 (0.3 + 0.2 + 0.1) / 3 = 0.2, step 100 (0.2 + 0.3 + 0.4) / 3 = 0.3; x 0.1, 1, 2
    np.testing.assert_allclose(obs["first"].sel(module=["attn", "mlp", "block"]).values, [0.02, 0.2, 0.4])
    np.testing.assert_allclose(obs["final"].sel(module=["attn", "mlp", "block"]).values, [0.03, 0.3, 0.6])
    np.testing.assert_allclose(obs["change"].sel(module=["attn", "mlp", "block"]).values, [0.01, 0.1, 0.2])
    assert bool(obs["attn_lowest_at_end"])  # 0.03 < 0.3 and 0.03 < 0.6
    # attention below MLP (0.3 < 0.6) but above block (0.3 > 0.03) at the end: not the study's claim
    swap = xr.concat([imp, imp * 2, imp * 0.1], dim="module").assign_coords(module=["attn", "mlp", "block"])
    assert not bool(analyses.study_observation(swap)["attn_lowest_at_end"])


def test_strategy_agreement_by_hand():
    order = xr.DataArray(
        [[[3, 2, 1, 0], [3, 1, 2, 0]], [[0, 1, 2, 3], [0, 1, 2, 3]]],
        dims=("module", "strategy", "rank"),
        coords={"module": ["attn", "mlp"], "strategy": ["one-shot", "iterative"]},
    )
    a = analyses.strategy_agreement(order)
    assert int(a["first_k_differing"].sel(module="attn")) == 2  # {3,2} vs {3,1}
    assert float(a["overlap"].sel(module="attn", k=2)) == pytest.approx(1 / 3)
    assert int(a["first_k_differing"].sel(module="mlp")) == 0
    assert float(a["spearman"].sel(module="attn")) == pytest.approx(0.8)
    text = analyses.describe(a)
    assert "attn: they first differ at k=2" in text and "mlp: one-shot and iterative agree" in text
