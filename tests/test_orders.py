"""Iterative orders re-score the dropped model; they land in the cube next to one-shot orders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from redundancy import Scorer, open_cube
from redundancy.drop import iterative_order
from redundancy.scoring._masks import runtime_drop

from _models import tiny_model


def test_iterative_by_hand():
    model = tiny_model("llama", layers=4)
    scorer = Scorer(model, ["importance"])
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    got = iterative_order(scorer, ids, "attn", batch_size=4)
    chosen = []
    for _ in range(4):  # by hand: drop, re-score, pick the least important remaining attention
        with runtime_drop(model, scorer.family, attn=chosen):
            s = scorer.score(ids, 4)[:, :, 1, 0].mean(0)
        s[chosen] = np.inf
        chosen.append(int(np.argmin(s)))
    assert got == chosen and sorted(got) == [0, 1, 2, 3]


@pytest.mark.slow  # scores, orders and draws figures through the CLI, ~6 s
def test_order_cli_stores_both_strategies(local_series, tmp_path):
    from typer.testing import CliRunner

    from redundancy.cli import app
    out = str(tmp_path / "c.zarr")
    fast = ["--samples", "4", "--seq-len", "32", "--batch-size", "4", "-d", "math"]
    r = CliRunner().invoke(app, ["score", f"local:{local_series}", "--out", out, *fast])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app, ["order", f"local:{local_series}", "--out", out, "-d", "math", "--step", "100"]
    )
    assert r.exit_code == 0, r.output
    cube = open_cube(out)
    o = cube.drop_order.sel(step=100, dataset="math").squeeze("model")
    assert list(o.strategy.values) == ["one-shot", "iterative"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redundancy import calibration_tokens

    folder = local_series / "step-100"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = calibration_tokens("math", AutoTokenizer.from_pretrained(folder), 4, 32, seed=0).tokens
    for mod in ("block", "attn", "mlp"):
        iterative = o.sel(strategy="iterative", module=mod).values.tolist()
        assert iterative == iterative_order(Scorer(model, ["importance"]), ids, mod, batch_size=4)
        # the first round drops nothing yet: its pick is the one-shot order's first layer
        assert iterative[0] == o.sel(strategy="one-shot", module=mod).values[0]
    one_shot = np.argsort(
        cube.importance.sel(step=100, dataset="math", module="attn").mean("sample").squeeze().values
    )
    assert o.sel(strategy="one-shot", module="attn").values.tolist() == one_shot.tolist()
    assert (cube.drop_order.sel(step=0) == -1).all()  # steps without orders read -1
    r = CliRunner().invoke(app, ["figures", out, "--out", str(tmp_path / "figs")])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "figs").glob("*.png")}
    assert {
        "one_shot_vs_iterative_series0_100_math.png",
        "order_grid_series0_math.png",
        "block_per_layer_series0.png",
        "heatmap_series0_math_importance.png",
    } <= names
