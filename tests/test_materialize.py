"""Dropped checkpoints: reload with logits equal to the runtime-masked model, for every family."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from redundancy._stores import store_kind
from redundancy.drop import DropPlan, load_any, load_dropped, materialize
from redundancy.errors import DropError, RedundancyError
from redundancy.families import family_for
from redundancy.scoring._masks import runtime_drop

from _models import CONFIGS, tiny_model
from _support import make_tokenizer

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


# one plan of each kind the study makes; the block plan moves layer 3 to index 2, where a period
# (decoder_sparse_step, no_rope_layer_interval) or an index list left as it was gives another model
PLANS = {"block": DropPlan(attn=(2,), mlp=(2,)), "attn": DropPlan(attn=(2,)), "mlp": DropPlan(mlp=(1, 3)),
         "joint": DropPlan(attn=(2,), mlp=(1, 2))}


def _masked(model, plan):
    """(logits, greedy generation) of the source with the plan's modules masked at run time."""
    with torch.no_grad(), runtime_drop(model, family_for(model.config), attn=plan.attn, mlp=plan.mlp):
        return model(IDS).logits, model.generate(IDS[:1, :8], max_new_tokens=4, do_sample=False)


def _same_model(loaded, want, generate=True):
    """Same logits; and the same greedy tokens through the KV cache (prefill, then one token a step)."""
    logits, gen = want
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, logits, rtol=0, atol=1e-5)
        if generate:
            assert torch.equal(loaded.generate(IDS[:1, :8], max_new_tokens=4, do_sample=False), gen)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_drop_kind_reloads_as_the_masked_model(name, tok, tmp_path):
    """Block, attention, MLP and joint drops of every family configuration, reloaded by plain
    `from_pretrained` (no custom code for a stock block drop, trust_remote_code for the dropped
    format) and by `load_any`: the runtime-masked source's logits and greedy generation."""
    model = _src(name, tok, tmp_path)
    for kind, plan in PLANS.items():
        out = materialize(tmp_path / "src", plan, tmp_path / kind)
        want = _masked(model, plan)
        stock = not (out / "modeling_dropped.py").exists()
        index_bound = model.config.to_dict().get("scale_attn_by_inverse_layer_idx")
        assert stock == (kind == "block" and not index_bound)
        plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=not stock)
        _same_model(plain.eval(), want)
        _same_model(load_any(out, dtype=torch.float32), want, generate=False)  # the same modules as plain
        if stock:
            assert plain.config.num_hidden_layers == 3


@pytest.mark.parametrize("name", list(CONFIGS))
def test_dropped_weights_and_kv_cache_are_gone(name, tok, tmp_path):
    model = _src(name, tok, tmp_path)
    plan = DropPlan(attn=(2,), mlp=(1, 3))
    out = materialize(tmp_path / "src", plan, tmp_path / "dropped")
    config = json.loads((out / "config.json").read_text())
    assert config["drop_attn_list"] == [2] and config["drop_mlp_list"] == [1, 3]
    assert config["model_type"] == "redundancy_dropped"
    assert config["stock_model_type"] == model.config.model_type
    loaded = load_any(out, dtype=torch.float32)
    fam = family_for(model.config)
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


def test_smollm3_block_drop_keeps_each_layers_rope_choice(tok, tmp_path):
    """SmolLM3 decides RoPE per layer from `config.no_rope_layers[layer_idx]`
    (transformers/models/smollm3/modeling_smollm3.py, SmolLM3Attention.__init__): an 8-layer model,
    NoPE in layers 3 and 7; Block-2 of layers 1 and 2 keeps [1, 0, 1, 1, 1, 0]."""
    model = tiny_model("smollm3", vocab=512, layers=8)
    model.save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    plan = DropPlan(attn=(1, 2), mlp=(1, 2))
    out = materialize(tmp_path / "src", plan, tmp_path / "b2")
    config = json.loads((out / "config.json").read_text())
    assert config["no_rope_layers"] == [1, 0, 1, 1, 1, 0] and len(config["layer_types"]) == 6
    assert config["redundancy_block_drop"] == {"dropped_blocks": [1, 2], "source_layers": 8}
    assert store_kind(out) == "dropped"  # told apart from an original checkpoint: never overwritten as one
    _same_model(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(), _masked(model, plan))


def test_qwen2_moe_block_drop_keeps_dense_and_sparse_layers(tok, tmp_path):
    """Qwen2-MoE: dense MLP where `layer_idx in mlp_only_layers` or `(layer_idx + 1) %
    decoder_sparse_step != 0` (transformers/models/qwen2_moe/modeling_qwen2_moe.py,
    Qwen2MoeDecoderLayer.__init__); the period is written out as indices after a drop."""
    _src("qwen2_moe_dense", tok, tmp_path)  # dense 0, 2; sparse 1, 3
    out = materialize(tmp_path / "src", PLANS["block"], tmp_path / "b1")
    config = json.loads((out / "config.json").read_text())
    assert config["decoder_sparse_step"] == 1 and config["mlp_only_layers"] == [0]
    kinds = [type(layer.mlp).__name__ for layer in load_any(out).model.layers]
    assert kinds == ["Qwen2MoeMLP", "Qwen2MoeSparseMoeBlock", "Qwen2MoeSparseMoeBlock"]


def test_unknown_per_layer_field_is_refused_before_writing(tok, tmp_path):
    _src("llama", tok, tmp_path)
    cfg = json.loads((tmp_path / "src/config.json").read_text())
    (tmp_path / "src/config.json").write_text(json.dumps({**cfg, "moe_layer_freq": [1, 0, 1, 0]}))
    with pytest.raises(DropError, match="'moe_layer_freq'"):
        materialize(tmp_path / "src", PLANS["block"], tmp_path / "b")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob("b.*"))
    materialize(tmp_path / "src", PLANS["attn"], tmp_path / "a")  # layers keep their index: no remap needed


def test_dropped_format_never_loads_as_the_stock_family(tok, tmp_path):
    """Plain `from_pretrained` without trust_remote_code (lm-eval's default, serving engines) stops
    with transformers' 'contains custom code' instead of building llama with attention at random."""
    _src("llama", tok, tmp_path)
    out = materialize(tmp_path / "src", PLANS["attn"], tmp_path / "a")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert "trust_remote_code=True" in (out / "README.md").read_text()


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


@pytest.mark.slow  # two lm-eval processes
def test_lm_eval_with_its_defaults_loads_the_dropped_model_or_stops(tok, tmp_path):
    """`lm_eval --model hf --model_args pretrained=DIR` with its defaults (trust_remote_code off):
    a stock block drop evaluates; the dropped format exits non-zero saying trust_remote_code=True.
    With trust_remote_code, lm-eval's model gives load_any's logits."""
    import subprocess
    import sys

    import yaml
    from lm_eval.models.huggingface import HFLM

    from redundancy._data import DATA_DIR

    _src("llama", tok, tmp_path)
    blocks = materialize(tmp_path / "src", PLANS["block"], tmp_path / "block")
    attn = materialize(tmp_path / "src", PLANS["attn"], tmp_path / "attn")
    task = yaml.safe_load((DATA_DIR / "tasks" / "builtin_facts.yaml").read_text())
    task["dataset_kwargs"]["data_files"]["test"] = str(DATA_DIR / "tasks" / "builtin_facts.jsonl")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "builtin_facts.yaml").write_text(yaml.safe_dump(task))

    def lm_eval(folder):
        cli = Path(sys.executable).parent / "lm_eval"
        return subprocess.run([str(cli), "--model", "hf", "--model_args", f"pretrained={folder}",
                               "--tasks", "builtin_facts", "--include_path", str(tmp_path / "tasks"),
                               "--limit", "2", "--device", "cpu", "--batch_size", "1"],
                              capture_output=True, text=True, timeout=600)

    refused = lm_eval(attn)  # the CLI process, defaults and all
    assert refused.returncode != 0 and "trust_remote_code=True" in refused.stderr, refused.stderr[-2000:]
    # lm-eval's own model loading (HFLM, as the CLI builds it), in this process: the stock block drop
    # with its defaults, the dropped format with trust_remote_code; each gives load_any's logits
    for folder, trust in ((blocks, False), (attn, True)):
        lm = HFLM(pretrained=str(folder), trust_remote_code=trust, batch_size=1, device="cpu",
                  dtype="float32")
        want = load_any(folder, dtype=torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(lm.model(IDS).logits, want(IDS).logits, rtol=0, atol=0)
