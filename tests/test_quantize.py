"""AWQ and GPTQ W4A16 of dropped models: real llmcompressor runs on CPU; outputs reload, evaluate, time."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from redundancy.drop import DropPlan, load_any, materialize
from redundancy.errors import RedundancyError
from redundancy.sources._task import task_items
from redundancy.study.evaluate import evaluate
from redundancy.study.quantize import awq_mappings, check_group_size, quantize
from redundancy.study.speed import measure_speed

from _models import tiny_model
from _support import make_tokenizer

pytestmark = pytest.mark.slow  # llmcompressor: AWQ and GPTQ calibrate on CPU

IDS = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
PLAN = DropPlan(attn=(2,), mlp=(1,))


@pytest.fixture(scope="module")
def dropped(tmp_path_factory):
    """A tiny Llama (widths 64 and 128) with layer 2's attention and layer 1's MLP dropped."""
    root = tmp_path_factory.mktemp("quant")
    tiny_model("llama", vocab=512).save_pretrained(root / "src")
    make_tokenizer().save_pretrained(root / "src")
    return materialize(root / "src", PLAN, root / "dropped")


def _acc_by_hand(model, tokenizer, items: list[dict]) -> float:
    """lm-eval's multiple-choice acc: the share of items whose answer has the highest summed
    log-probability (prompt and choice encoded together, as lm-eval does for causal models)."""
    right = 0
    for item in items:
        n = len(tokenizer(item["prompt"])["input_ids"])
        logps = []
        for choice in item["choices"]:
            ids = torch.tensor([tokenizer(item["prompt"] + choice)["input_ids"]])
            with torch.no_grad():
                lp = model(ids).logits[0, :-1].float().log_softmax(-1)
            logps.append(float(lp[torch.arange(n - 1, ids.shape[1] - 1), ids[0, n:]].sum()))
        right += max(range(len(logps)), key=logps.__getitem__) == item["answer"]
    return right / len(items)


def _bytes(folder):
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def test_awq_mappings_skip_dropped_modules(dropped):
    names = [(m.smooth_layer, tuple(m.balance_layers)) for m in awq_mappings(load_any(dropped))]
    smooth = [s for s, _ in names]
    # 4 pairs per full layer: norm->qkv, v->o, norm->gate/up, up->down; layer 2 lost 2, layer 1 lost 2
    assert len(names) == 4 * 4 - 2 - 2
    layer2 = [s for s in smooth if s.startswith("model.layers.2.")]
    layer1 = [s for s in smooth if s.startswith("model.layers.1.")]
    assert not any("input_layernorm" in s or "v_proj" in s for s in layer2)  # attention 2 dropped
    assert not any("post_attention" in s or "up_proj" in s for s in layer1)  # MLP 1 dropped
    qkv = tuple(f"model.layers.0.self_attn.{p}_proj" for p in "qkv")
    assert ("model.layers.0.input_layernorm", qkv) in names


def test_group_size_must_divide_widths(dropped):
    with pytest.raises(RedundancyError, match="not a multiple of the group size 48"):
        check_group_size(load_any(dropped), 48)


@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_quantized_dropped_model_reloads_evaluates_and_times(method, dropped, tmp_path):
    out = quantize(dropped, tmp_path / method, method=method, group_size=32, n_samples=8, seq_len=32,
                   n_grid=4)
    ref = load_any(dropped)
    config = json.loads((out / "config.json").read_text())  # still the dropped format, now 4-bit
    assert config["model_type"] == "redundancy_dropped" and "quantization_config" in config
    with pytest.raises(ValueError, match="trust_remote_code=True"):  # never the stock family at random
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    for model in (load_any(out), AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()):
        assert type(model.model.layers[2].self_attn).__name__ == "DroppedAttention"
        assert type(model.model.layers[1].mlp).__name__ == "DroppedMLP"
        with torch.no_grad():
            got, want = model(IDS).logits, ref(IDS).logits
        err = (got - want).norm() / want.norm()  # random weights at 4 bits: large but bounded
        assert 0 < err < 0.6, f"4-bit logits should be near, not equal to, fp32: relative error {err:.3f}"
        # every group of 32 weights holds at most 16 distinct values (4 bits), read after reloading
        w = model.model.layers[0].self_attn.q_proj.weight.detach().reshape(-1, 32)
        assert max(len(torch.unique(row)) for row in w) <= 16
    # 4-bit weights with a scale per 32 values: the quantized layers take well under half the bytes
    assert _bytes(out) < 0.6 * _bytes(dropped)
    tokenizer = make_tokenizer()
    scores = evaluate(model, tokenizer, preset="builtin", batch_size=8, limit=8)
    # lm-eval ran the reloaded 4-bit model: its acc on the first 8 facts is the one scored by hand
    assert scores == {"builtin_facts": _acc_by_hand(model, tokenizer, task_items("builtin_facts")[:8])}
    speed = measure_speed(model, prompt_tokens=16, new_tokens=4, repeats=1)
    # the reloaded 4-bit model caches keys and values of its kept attention layers, in fp32:
    # (k and v) x kv heads x head dim x (16 + 4 - 1 positions) x 4 bytes, per kept layer
    c = model.config
    per_layer = 2 * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 19 * 4
    kept = c.num_hidden_layers - len(PLAN.attn)
    assert speed.kv_cache_bytes == kept * per_layer
    assert speed.tokens_per_s * speed.seconds == pytest.approx(16 + 4)


def test_cli_refuses_a_group_size_that_does_not_divide_the_widths(dropped, tmp_path):
    from typer.testing import CliRunner

    from redundancy.cli import app

    args = ["quantize", str(dropped), "--group-size", "48", "--out", str(tmp_path / "q")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and "not a multiple of the group size 48" in r.output
    assert not (tmp_path / "q").exists()


def test_cli_study_rejects_a_bad_plan_spec(dropped, tmp_path):
    from typer.testing import CliRunner

    from redundancy.cli import app

    r = CliRunner().invoke(app, ["study", str(dropped), "--store", str(tmp_path / "c.zarr"), "--out",
                                 str(tmp_path / "s"), "--k", "heads=4"])
    assert r.exit_code == 1 and "unknown plan kind 'heads'" in r.output, r.output
    assert "Known: attn, block, joint, mlp" in r.output


@pytest.mark.parametrize("name", ["olmo", "olmo3", "smollm3", "granite", "gemma3_text", "phi3", "bloom"])
def test_awq_of_every_new_dense_family_reloads_near_the_original(name, tmp_path):
    """llmcompressor has AWQ mappings for these families (issue 12); a dropped MLP in each."""
    src = tmp_path / "src"
    tiny_model(name, vocab=512, hidden=64).save_pretrained(src)
    make_tokenizer().save_pretrained(src)
    dropped = materialize(src, DropPlan(mlp=(1,)), tmp_path / "dropped")
    out = quantize(dropped, tmp_path / "awq", method="awq", group_size=32, n_samples=4, seq_len=32, n_grid=4)
    with torch.no_grad():
        got, want = load_any(out)(IDS).logits, load_any(dropped)(IDS).logits
    err = (got - want).norm() / want.norm()
    assert 0 < err < 0.6, f"{name}: relative error {err:.3f}"


@pytest.mark.parametrize("name,cls", [("gpt2", "GPT2LMHeadModel"), ("falcon", "FalconForCausalLM")])
def test_awq_without_mappings_is_a_clear_error(name, cls, tmp_path):
    """GPT-2 (Conv1D layers) and Falcon: llmcompressor has no AWQ smoothing pairs for them."""
    tiny_model(name, vocab=512).save_pretrained(tmp_path / "src")
    make_tokenizer().save_pretrained(tmp_path / "src")
    with pytest.raises(RedundancyError, match=f"AWQ has no smoothing pairs for {cls}"):
        quantize(tmp_path / "src", tmp_path / "awq", method="awq", group_size=32, n_samples=4, seq_len=32)
    assert not (tmp_path / "awq").exists()


@pytest.mark.parametrize("name", ["olmoe", "mixtral", "qwen2_moe", "qwen3_moe"])
def test_mixture_of_experts_is_refused_before_any_work(name, tmp_path):
    """Their 4-bit checkpoints do not reload (experts fused on load): a clear error, nothing written."""
    tiny_model(name, vocab=512).save_pretrained(tmp_path / "src")
    make_tokenizer().save_pretrained(tmp_path / "src")
    with pytest.raises(RedundancyError, match="mixture of experts"):
        quantize(tmp_path / "src", tmp_path / "q", method="gptq", group_size=16, n_samples=4, seq_len=32)
    assert not (tmp_path / "q").exists()
