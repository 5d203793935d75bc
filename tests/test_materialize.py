"""Dropped checkpoints: reload with logits equal to the runtime-masked model, for every family."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from redundancy.drop import DropPlan, load_dropped, materialize
from redundancy.errors import RedundancyError
from redundancy.families import family_for
from redundancy.scoring._masks import runtime_drop

from _models import CONFIGS, tiny_model
from conftest import make_tokenizer

IDS = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _src(name, tok, tmp_path):
    model = tiny_model(name, vocab=512)
    model.save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    return model


def _tensor_bytes(folder):
    """Bytes of all tensors in the folder's safetensors files (fp32), read from their headers."""
    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) * 4 for k in st.keys())
    return total


def _kv_layers(model) -> list[int]:
    """KV-cache bytes per layer after a forward pass (0 for a layer that caches nothing)."""
    with torch.no_grad():
        cache = model(IDS, use_cache=True).past_key_values
    return [kv.keys.nbytes + kv.values.nbytes if getattr(kv, "keys", None) is not None and kv.keys.numel() > 0
            else 0 for kv in cache.layers]


def _kv_bytes(model):
    return sum(_kv_layers(model))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_attn_mlp_drop_round_trip(name, tok, tmp_path):
    model = _src(name, tok, tmp_path)
    plan = DropPlan(attn=(2,), mlp=(1, 3))
    out = materialize(tmp_path / "src", plan, tmp_path / "dropped")
    config = json.loads((out / "config.json").read_text())
    assert config["drop_attn_list"] == [2] and config["drop_mlp_list"] == [1, 3]
    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    fam = family_for(model.config)
    with torch.no_grad(), runtime_drop(model, fam, attn=plan.attn, mlp=plan.mlp):
        want = model(IDS).logits
        want_gen = model.generate(IDS[:1, :8], max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, want, rtol=0, atol=1e-5)
        assert torch.equal(loaded.generate(IDS[:1, :8], max_new_tokens=6, do_sample=False), want_gen)
    layers = model.get_submodule(fam.layers)
    dropped = [
        layers[2].get_submodule(fam.attn),
        layers[1].get_submodule(fam.mlp),
        layers[3].get_submodule(fam.mlp),
    ]
    for i, kind in [(2, "attn"), (1, "mlp"), (3, "mlp")]:
        for site in {getattr(fam, f"{kind}_norm"), getattr(fam, f"{kind}_out")} - {None, getattr(fam, kind)}:
            dropped.append(layers[i].get_submodule(site))
    params = {id(p): p for m in dropped for p in m.parameters()}  # bloom's dense sits inside its attention
    gone = sum(p.numel() * 4 for p in params.values())
    assert _tensor_bytes(tmp_path / "src") - _tensor_bytes(out) == gone > 0
    full = _kv_layers(model)  # sliding-window layers (olmo3, gemma3) cache less than full ones
    assert all(full) and _kv_bytes(loaded) == sum(full) - full[2]  # layer 2's attention caches nothing


@pytest.mark.parametrize("name", ["llama", "gpt_neox", "gemma2"])
def test_block_drop_is_a_stock_model(name, tok, tmp_path):
    model = _src(name, tok, tmp_path)
    out = materialize(tmp_path / "src", DropPlan(attn=(1, 2), mlp=(1, 2)), tmp_path / "blocks")
    assert not (out / "modeling_dropped.py").exists()
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # no custom code
    assert loaded.config.num_hidden_layers == 2
    with torch.no_grad(), runtime_drop(model, family_for(model.config), attn=(1, 2), mlp=(1, 2)):
        want = model(IDS).logits
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, want, rtol=0, atol=1e-5)


def test_released_format_loads(tok, tmp_path):
    model = _src("llama", tok, tmp_path)
    cfg = json.loads((tmp_path / "src/config.json").read_text())
    cfg.update(
        drop_attn_list=[False, True, False, True],
        drop_mlp_list=[],
        auto_map={
            "AutoConfig": "configuration_dropped_llama.LlamaConfig",
            "AutoModelForCausalLM": "modeling_dropped_llama.LlamaForCausalLM",
        },
    )
    (tmp_path / "src/config.json").write_text(json.dumps(cfg))  # weights of dropped layers still inside
    loaded = load_dropped(tmp_path / "src", dtype=torch.float32).eval()
    with torch.no_grad(), runtime_drop(model, family_for(model.config), attn=(1, 3)):
        torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, rtol=0, atol=1e-5)


def test_bad_plans(tok, tmp_path):
    _src("llama", tok, tmp_path)
    with pytest.raises(RedundancyError, match="layer 9 does not exist"):
        materialize(tmp_path / "src", DropPlan(attn=(9,)), tmp_path / "x")
    with pytest.raises(RedundancyError, match="cannot drop the attention of layer 0"):
        materialize(tmp_path / "src", DropPlan(attn=(0,)), tmp_path / "x")
    assert DropPlan.from_order("joint", [("attn", 3), ("mlp", 2), ("attn", 1)], 2) == DropPlan(
        (3,), (2,), "Joint-2", "joint"
    )


def test_drop_cli_from_a_stored_order(local_series, tmp_path):
    from typer.testing import CliRunner

    from redundancy import open_cube
    from redundancy.cli import app

    store = tmp_path / "c.zarr"
    r = CliRunner().invoke(
        app,
        [
            "score",
            f"local:{local_series}",
            "--out",
            str(store),
            "-d",
            "math",
            "--samples",
            "4",
            "--seq-len",
            "32",
        ],
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app,
        [
            "drop",
            str(local_series / "step-1000"),
            "--out",
            str(tmp_path / "d"),
            "--kind",
            "mlp",
            "--k",
            "2",
            "--store",
            str(store),
            "--dataset",
            "math",
        ],
    )
    assert r.exit_code == 0, r.output
    imp = (
        open_cube(store)
        .importance.sel(step=1000, dataset="math", module="mlp")
        .mean("sample")
        .squeeze()
        .values
    )
    want = sorted(int(i) for i in imp.argsort()[:2])
    assert json.loads((tmp_path / "d" / "config.json").read_text())["drop_mlp_list"] == want
    r = CliRunner().invoke(
        app, ["drop", str(local_series / "step-1000"), "--out", str(tmp_path / "e"), "--attn", "x"]
    )
    assert r.exit_code == 1 and "comma-separated integers" in r.output
