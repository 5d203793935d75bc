"""Exact ablation (loss_delta, kl): the cached-prefix schedule equals the naive one, and loss_delta
equals the loss of the model materialized without that module minus the full model's, for every
family in the table."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from redundancy import open_cube
from redundancy.cli import app
from redundancy.drop import DropPlan, materialize
from redundancy.errors import UnsupportedFamilyError
from redundancy.families import family_for
from redundancy.scoring import Scorer, score_layerwise
from redundancy.scoring._ablation import ablate

from _models import CONFIGS, tiny_model
from _support import make_tokenizer, stored_scores

IDS = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(3))


def _loss(model, ids) -> torch.Tensor:
    """Mean next-token loss per sample, written out here (not the module's helper)."""
    with torch.no_grad():
        logits = model(ids).logits[:, :-1].double()
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(-1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_prefix_equals_naive_and_the_materialized_model(name, tmp_path):
    model = tiny_model(name, vocab=512)
    fam = family_for(model.config)
    cached = ablate(model, fam, IDS)
    naive = ablate(model, fam, IDS, reuse_prefix=False)
    torch.testing.assert_close(cached, naive, rtol=0, atol=1e-5)
    assert cached[..., 0].abs().max() > 1e-3 and (cached[..., 1] >= -1e-6).all()  # KL is never negative
    model.save_pretrained(tmp_path / "src")
    make_tokenizer().save_pretrained(tmp_path / "src")
    full = _loss(model, IDS)
    attn = _droppable_attention(model.config)
    for plan, (layer, k) in ((DropPlan(attn=(attn,)), (attn, 1)), (DropPlan(mlp=(2,)), (2, 2))):
        out = materialize(tmp_path / "src", plan, tmp_path / f"{plan.name or k}-{layer}-{k}")
        dropped = AutoModelForCausalLM.from_pretrained(
            out, trust_remote_code=True, dtype=torch.float32
        ).eval()
        want = (_loss(dropped, IDS) - full).float()
        torch.testing.assert_close(cached[:, layer, k, 0], want, rtol=0, atol=1e-5)


def _droppable_attention(config) -> int:
    """A layer whose attention a saved checkpoint may drop: not the first of its attention type (the
    KV cache reads the sequence length there; drop/_materialize.py refuses it)."""
    types = getattr(config, "layer_types", None) or ["full"] * config.num_hidden_layers
    return next(layer for layer in (1, 2, 3) if types[layer] in types[:layer])


def test_scorer_and_cube_carry_the_exact_metrics(local_series, tmp_path):
    model = tiny_model("llama", vocab=512)
    from redundancy.scoring._first_order import first_order

    got = Scorer(model, ["importance", "loss_delta", "kl", "loss_delta_grad"]).score(IDS, batch_size=2)
    want = ablate(model, family_for(model.config), IDS).numpy()
    np.testing.assert_allclose(got[..., 1:3], want, atol=1e-6)
    np.testing.assert_allclose(
        got[..., 3], first_order(model, family_for(model.config), IDS).numpy(), atol=1e-6
    )
    fast = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]
    r = CliRunner().invoke(
        app,
        [
            "score",
            f"local:{local_series / 'step-10'}",
            "--out",
            str(tmp_path / "c.zarr"),
            "--metric",
            "importance",
            "--metric",
            "loss_delta",
            "--metric",
            "kl",
            *fast,
        ],
    )
    assert r.exit_code == 0, r.output
    cube = open_cube(tmp_path / "c.zarr")
    assert {"importance", "loss_delta", "kl"} <= set(cube.data_vars) and "angular_distance" not in cube
    for metric in ("importance", "loss_delta", "kl"):  # step-10's own weights and math windows
        got = cube[metric].sel(step=10, dataset="math").squeeze("model").values
        want = stored_scores(local_series / "step-10", metric=metric)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_layerwise_mode_refuses_exact_ablation(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "m")
    with pytest.raises(UnsupportedFamilyError, match="score it in full mode"):
        score_layerwise(tmp_path / "m", IDS[:, :8] % 256, batch_size=2, metrics=["importance", "loss_delta"])


@pytest.mark.parametrize("name", ["llama", "gpt_neox", "olmo2", "gemma2", "granite", "bloom", "falcon"])
def test_first_order_estimate_matches_a_finite_difference(name):
    """-(dL/dY) . f against a central difference of L(Y - eps f), float64, for attention, MLP and block.
    The forms differ: parallel, post-norm, sandwich, scaled residual, residual inside, in-place add."""
    from redundancy.families import get_path
    from redundancy.scoring._first_order import first_order
    from redundancy.scoring._hooks import decoder_layers

    ids = IDS[:, :16] % 256
    model = tiny_model(name).double()
    fam = family_for(model.config)
    est = first_order(model, fam, ids).double()
    eps = 1e-3

    def shrink(site_module, layer_input=None):
        """Loss with what `site_module` adds scaled by (1 - e), for e = +eps and -eps."""
        losses = []
        for e in (eps, -eps):

            def hook(mod, args, kwargs, out, e=e):
                first = out[0] if isinstance(out, tuple) else out
                base = (args[0] if args else kwargs["hidden_states"]) if layer_input else 0
                new = first - e * (first - base)
                return (new, *out[1:]) if isinstance(out, tuple) else new

            h = site_module.register_forward_hook(hook, with_kwargs=True)
            losses.append(_loss(model, ids))
            h.remove()
        return (losses[0] - losses[1]) / (2 * eps)

    for layer in (1, 2):
        mod = decoder_layers(model, fam)[layer]
        for k, site in ((0, mod), (1, get_path(mod, fam.attn_out)), (2, get_path(mod, fam.mlp_out))):
            fd = shrink(site, layer_input=k == 0)
            torch.testing.assert_close(est[:, layer, k], fd, rtol=1e-2, atol=2e-3)


def test_metric_agreement_by_hand():
    """Layers 0..3: importance 0.1 0.4 0.2 0.3 (ranks 1 4 2 3), loss_delta 0.2 0.1 0.4 0.3 (2 1 4 3):
    Spearman 1 - 6 * (1 + 9 + 4 + 0) / 60 = -0.4; 1-drop sets {0} vs {1}: overlap 0; 2-drop {0, 2}
    vs {0, 1}: 1/3."""
    import xarray as xr

    import analyses

    dims = ("layer",)
    cube = xr.Dataset(
        {"importance": (dims, [0.1, 0.4, 0.2, 0.3]), "loss_delta": (dims, [0.2, 0.1, 0.4, 0.3])},
        coords={"layer": [0, 1, 2, 3]},
    )
    got = analyses.metric_agreement(cube)
    assert float(got.rank_correlation) == pytest.approx(-0.4)
    assert got.overlap.sel(k=1).item() == 0 and got.overlap.sel(k=2).item() == pytest.approx(1 / 3)
