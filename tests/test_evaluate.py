"""lm-eval on builtin:tiny: dropping modules costs accuracy on its learnable task; results stored."""
from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from redundancy.cli import app
from redundancy.results import open_results
from redundancy.sources import open_series


def test_dropping_costs_accuracy(demo_dir, tmp_path):
    final = open_series("builtin:tiny").checkpoints[-1].path  # trained by the demo fixture
    results = tmp_path / "results.zarr"
    runs = [("baseline", None)] + [(f"{name}-{k}", ["--kind", name.lower(), "--k", str(k)])
                                   for name, k in [("Block", 2), ("Block", 6), ("MLP", 6), ("Attn", 6)]]
    for plan, drop in runs:
        target = final
        if drop:
            target = tmp_path / plan
            r = CliRunner().invoke(app, ["drop", str(final), "--out", str(target), *drop,
                                         "--store", str(demo_dir / "cube.zarr"), "--dataset", "prose"])
            assert r.exit_code == 0, r.output
        r = CliRunner().invoke(app, ["evaluate", str(target), "--out", str(results), "--plan", plan,
                                     "--model", "builtin:tiny", "--step", "300"])
        assert r.exit_code == 0, r.output
    res = open_results(results).sel(model="builtin:tiny", step=300)
    facts = res["score"].sel(task="builtin_facts")
    assert facts.sel(plan="baseline") > 0.3  # learned: chance is 1/8
    for plan in ("Block-6", "MLP-6", "Attn-6"):  # 6 of 8 gone: the memorised facts suffer
        assert facts.sel(plan=plan) < facts.sel(plan="baseline") - 0.1, plan
    assert facts.sel(plan="Block-2") > facts.sel(plan="Block-6")  # more dropped, less kept
    np.testing.assert_allclose(res["pct_of_baseline"].sel(plan="baseline"), 100.0)
    assert set(res["task"].values) == {"builtin_facts", "builtin_recall"}
