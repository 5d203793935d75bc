"""Iterative orders re-score the dropped model; they land in the cube next to one-shot orders.

The orders are worked out by hand on a tiny Llama whose sublayers' output projections (attention's
o_proj, the MLP's down_proj) are scaled per layer. A sublayer adding y to the residual stream x has
importance 1 - cos(x, x + y) ~ |y_perp|^2 / (2 |x|^2) for small y (Men et al. 2024, ShortGPT: one minus
the cosine of the stream before and after): it scales with the square of its output's scale, and a
zeroed projection adds exactly 0 (importance exactly 0). With the scales below, 10x apart, the scores
of one module type are 100x apart (measured over 20 seeds: never out of order):

    layer            0      1      2      3
    attn  (o_proj)   1      0      1e-3   1e-2   -> attn order  1, 2, 3, 0
    mlp (down_proj)  1e-2   1e-1   0      1e-3   -> mlp order   2, 3, 0, 1
    block (larger)   1      1e-1   1e-3   1e-2   -> block order 2, 3, 1, 0

Iteratively: dropping a sublayer removes at most a 1e-2 part of the stream, which leaves the remaining
sublayers' scores 100x apart in the same order: every round picks the next of the one-shot order.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import xarray as xr

from redundancy import Scorer, open_cube
from redundancy.drop import iterative_order

from _models import tiny_model
from _support import make_tokenizer

ATTN_SCALE = (1.0, 0.0, 1e-3, 1e-2)
MLP_SCALE = (1e-2, 1e-1, 0.0, 1e-3)
BY_HAND = {"block": [2, 3, 1, 0], "attn": [1, 2, 3, 0], "mlp": [2, 3, 0, 1]}  # the docstring's table


def scaled_llama(seed: int = 0) -> torch.nn.Module:
    """A random 4-layer Llama (vocabulary 512) with the docstring's output-projection scales."""
    model = tiny_model("llama", seed=seed, vocab=512)
    with torch.no_grad():
        for layer, a, m in zip(model.model.layers, ATTN_SCALE, MLP_SCALE):
            layer.self_attn.o_proj.weight.mul_(a)
            layer.mlp.down_proj.weight.mul_(m)
    return model


@pytest.mark.parametrize("module", ["block", "attn", "mlp"])
def test_iterative_order_by_hand(module):
    model = scaled_llama()
    scorer = Scorer(model, ["importance"])
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    rounds = []
    got = iterative_order(scorer, ids, module, batch_size=4, on_step=lambda i, n: rounds.append((i, n)))
    assert got == BY_HAND[module]
    assert rounds == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one scoring round per layer


def test_a_zeroed_sublayer_scores_exactly_zero():
    """The table's premise: the zeroed projections (attention of layer 1, MLP of layer 2) add exactly 0."""
    scores = Scorer(scaled_llama(), ["importance"]).score(
        torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(1)), 2)[..., 0]
    assert (scores[:, 1, 1] == 0).all() and (scores[:, 2, 2] == 0).all()  # (sample, layer, module)


def _scaled_series(root: Path) -> Path:
    """root/step-0 and root/step-100: scaled_llama of seeds 0 and 100, with a tokenizer and their step."""
    tok = make_tokenizer()
    for step in (0, 100):
        folder = root / f"step-{step}"
        scaled_llama(seed=step).save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": step * 4096}))
    return root


@pytest.mark.slow  # scores, orders and draws figures through the CLI, ~6 s
def test_order_cli_stores_both_strategies(tmp_path):
    from typer.testing import CliRunner

    from redundancy.cli import app
    series = _scaled_series(tmp_path / "series")
    out = str(tmp_path / "c.zarr")
    fast = ["--samples", "4", "--seq-len", "32", "--batch-size", "4", "-d", "math"]
    r = CliRunner().invoke(app, ["score", f"local:{series}", "--out", out, *fast])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["order", f"local:{series}", "--out", out, "-d", "math", "--step", "100"])
    assert r.exit_code == 0, r.output
    cube = open_cube(out)
    stored = cube.drop_order.sel(step=100, dataset="math").squeeze("model").reset_coords(drop=True)
    modules = [str(m) for m in stored.module.values]
    by_hand = xr.DataArray([[BY_HAND[m] for m in modules]] * 2, dims=("strategy", "module", "rank"),
                           coords={"strategy": ["one-shot", "iterative"], "module": modules,
                                   "rank": [0, 1, 2, 3]})
    xr.testing.assert_equal(stored.transpose(*by_hand.dims).astype(int), by_hand)
    unordered = xr.full_like(by_hand, -1)  # steps without orders read -1
    xr.testing.assert_equal(cube.drop_order.sel(step=0, dataset="math").squeeze("model")
                            .reset_coords(drop=True).transpose(*by_hand.dims).astype(int), unordered)
    r = CliRunner().invoke(app, ["figures", out, "--out", str(tmp_path / "figs")])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "figs").glob("*.png")}
    assert {
        "one_shot_vs_iterative_series_100_math.png",
        "order_grid_series_math.png",
        "block_per_layer_series.png",
        "heatmap_series_math_importance.png",
    } <= names
