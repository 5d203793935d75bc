"""Every family's scores equal an independent reference computation within 1e-4 (fp32).

The reference re-derives each layer's residual arithmetic by hand, per family, from the layer's
input and its raw attention output (the only parts it hooks), checks that it reproduces the layer's
real output, and computes the metrics in float64 numpy. It shares no code with the scorer.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from redundancy.errors import UnsupportedFamilyError
from redundancy.families import FAMILIES, family_for
from redundancy.scoring import MODULES, Scorer

from _models import ALIASES, CONFIGS, tiny_model

METRICS = ["importance", "importance_no_residual", "angular_distance", "relative_magnitude"]


def _layer_parts(name: str, layer, h, a_raw):
    """(X, Y, f, u) for block, attn and mlp of one layer, written out per residual form."""
    if name == "gpt_neox" or name.startswith("falcon"):  # parallel: o = h + attn(norm(h)) + mlp(norm'(h))
        if name == "gpt_neox":
            ua, um = layer.input_layernorm(h), layer.post_attention_layernorm(h)
        else:  # FalconDecoderLayer: one shared norm (Falcon-7B) or a norm each (Falcon-40B)
            ua = layer.ln_attn(h) if name == "falcon_new" else layer.input_layernorm(h)
            um = layer.ln_mlp(h) if name == "falcon_new" else ua
        a, m = a_raw, layer.mlp(um)
        o = h + a + m
        return o, {"block": (h, o, o - h, h), "attn": (h, h + a, a, ua), "mlp": (h, h + m, m, um)}
    if name == "gpt2":  # transformers/models/gpt2/modeling_gpt2.py GPT2Block.forward
        ua, a = layer.ln_1(h), a_raw
        mid = h + a
        um = layer.ln_2(mid)
        m = layer.mlp(um)
    elif name == "granite":  # GraniteDecoderLayer.forward: residual + output * residual_multiplier
        r = layer.residual_multiplier
        ua, a = layer.input_layernorm(h), a_raw * r
        mid = h + a
        um = layer.post_attention_layernorm(mid)
        m = layer.mlp(um) * r
    elif name == "bloom":  # BloomBlock: attention and MLP return residual + their output
        ua = layer.input_layernorm(h)
        a = a_raw - h  # the attention module's output minus the residual it was given
        mid = h + a
        um = layer.post_attention_layernorm(mid)
        m = layer.mlp(um, torch.zeros_like(mid))  # BloomMLP(x, residual) with a zero residual: m alone
    elif name in ("gemma2", "gemma3_text"):
        ua, a = layer.input_layernorm(h), layer.post_attention_layernorm(a_raw)
        mid = h + a
        um = layer.pre_feedforward_layernorm(mid)
        m = layer.post_feedforward_layernorm(layer.mlp(um))
    elif name in ("olmo2", "olmo3"):
        ua, a = h, layer.post_attention_layernorm(a_raw)
        mid = um = h + a
        m = layer.post_feedforward_layernorm(layer.mlp(mid))
    else:  # sequential pre-norm
        ua, a = layer.input_layernorm(h), a_raw
        mid = h + a
        um = layer.post_attention_layernorm(mid)
        m = layer.mlp(um)
    o = mid + m
    return o, {"block": (h, o, o - h, h), "attn": (h, mid, a, ua), "mlp": (mid, o, m, um)}


def _metrics(x, y, f, u) -> list[float]:
    x, y, f, u = (t.double().numpy() for t in (x, y, f, u))
    def cos(p, q):
        return (p * q).sum(-1) / np.maximum(np.linalg.norm(p, axis=-1) * np.linalg.norm(q, axis=-1), 1e-8)
    c = cos(x, y)
    per_token = [1 - c, 1 - cos(u, f), np.arccos(np.clip(c, -1, 1)) / np.pi,
                 np.linalg.norm(f, axis=-1) / np.linalg.norm(y, axis=-1)]
    return [float(v.mean()) for v in per_token]  # one sample: mean over tokens


def _reference(name: str, model, ids) -> np.ndarray:
    layers = model.base_model.h if hasattr(model.base_model, "h") else model.base_model.layers
    attn_attr = {
        "gpt2": "attn",
        "bloom": "self_attention",
        "falcon": "self_attention",
        "falcon_new": "self_attention",
    }.get(name, "attention" if name.startswith("gpt_neox") else "self_attn")
    seen: dict = {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(
            layer.register_forward_pre_hook(
                lambda m, a, k, i=i: seen.__setitem__(("h", i), a[0] if a else k["hidden_states"]),
                with_kwargs=True,
            )
        )
        hooks.append(
            layer.register_forward_hook(  # bloom and falcon layers return (hidden, attn weights)
                lambda m, a, o, i=i: seen.__setitem__(("o", i), o[0] if isinstance(o, tuple) else o)
            )
        )
        hooks.append(
            getattr(layer, attn_attr).register_forward_hook(
                lambda m, a, o, i=i: seen.__setitem__(("a", i), o[0])
            )
        )
    with torch.no_grad():
        model(ids)
    for hk in hooks:
        hk.remove()
    out = np.zeros((ids.shape[0], len(layers), 3, len(METRICS)))
    with torch.no_grad():
        for i, layer in enumerate(layers):
            o, parts = _layer_parts(name, layer, seen[("h", i)], seen[("a", i)])
            torch.testing.assert_close(o, seen[("o", i)], atol=1e-4, rtol=1e-4)  # formula is right
            for b in range(ids.shape[0]):
                for j, mod in enumerate(MODULES):
                    out[b, i, j] = _metrics(*(t[b] for t in parts[mod]))
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_scores_equal_reference(name):
    model = tiny_model(name)
    ids = torch.randint(0, 256, (3, 48), generator=torch.Generator().manual_seed(1))
    got = Scorer(model, METRICS).score(ids, batch_size=2)
    # config variants of one residual form take their family's reference (the neox and falcon
    # variants change the form: the reference reads those by name)
    form = name if name in ("gpt_neox_sequential", "falcon_new") else ALIASES.get(name, name)
    want = _reference(form, model, ids)
    assert got.shape == want.shape == (3, 4, 3, 4)
    assert np.all(np.isfinite(got))
    assert got[..., 0].std() > 0.1 * got[..., 0].mean()  # not vacuous: scores differ across layers
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_table_covers_required_families():
    assert {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma2",
        "gpt_neox",
        "olmo2",
        "olmo",
        "olmo3",
        "olmoe",
        "smollm3",
        "gpt2",
        "granite",
        "gemma3_text",
        "phi3",
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
        "bloom",
        "falcon",
    } <= set(FAMILIES)
    assert {ALIASES.get(n, n) for n in CONFIGS} == set(FAMILIES)  # a tiny model each


def test_unknown_family_lists_supported():
    class Cfg:
        model_type = "t5"

    with pytest.raises(UnsupportedFamilyError, match="supported: gemma2.*how|To add one"):
        family_for(Cfg())


def test_hooks_removed_even_on_error():
    model = tiny_model("llama")
    n_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    scorer = Scorer(model)
    with pytest.raises(Exception):
        scorer.score(torch.full((1, 8), 10_000), batch_size=1)  # token id out of range
    n_after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert n_before == n_after


def test_non_finite_activation_is_reported():
    from redundancy.errors import NonFiniteActivationError

    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteActivationError, match="layer 2"):
        Scorer(model).score(torch.randint(0, 256, (2, 16)), batch_size=2)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_runtime_drop_leaves_residual_unchanged(name):
    from redundancy.scoring._masks import runtime_drop

    model = tiny_model(name)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    fam = family_for(model.config)
    with runtime_drop(model, fam, attn=[1], mlp=[1, 2]):
        scores = Scorer(model, METRICS).score(ids, batch_size=2)
        hidden = model(ids, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(scores[:, 1, :, 0], 0, atol=1e-6)  # layer 1 is the identity
    np.testing.assert_allclose(scores[:, 2, 2, 0], 0, atol=1e-6)  # layer 2's MLP adds nothing
    assert scores[:, 2, 1, 0].min() > 1e-3  # layer 2's attention still works
    torch.testing.assert_close(hidden[2], hidden[1], rtol=0, atol=0)


def test_families_command_prints_the_table():
    from typer.testing import CliRunner

    from redundancy.cli import app
    from redundancy.families import table_rows

    rows = {r["model_type"]: r for r in table_rows()}
    assert rows["granite"]["attention joins from"] == "self_attn x residual_multiplier"
    assert (
        rows["gpt_neox"]["residual"] == "parallel"
        and rows["gemma3_text"]["MLP joins from"] == "post_feedforward_layernorm"
    )
    assert rows["mixtral"]["layer-by-layer"].startswith("no") and rows["olmo3"]["layer-by-layer"] == "yes"
    r = CliRunner().invoke(app, ["families"], terminal_width=160)
    assert r.exit_code == 0 and all(t in r.output for t in FAMILIES)
