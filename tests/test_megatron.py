"""MAP-Neo's raw Megatron-LM checkpoints: 2 tensor-parallel ranks merged into a HF Llama."""
from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM

from _megatron_writer import write_megatron
from _models import tiny_model
from conftest import make_tokenizer
from redundancy.sources._megatron import convert_megatron


def test_round_trip_gives_identical_logits(tmp_path):
    model = tiny_model("llama", vocab=512)  # GQA: 4 heads, 2 kv groups
    write_megatron(model, tmp_path / "iter_0000010", tp=2, iteration=10, global_batch=4)
    make_tokenizer().save_pretrained(tmp_path / "tok")
    out = convert_megatron(tmp_path / "iter_0000010", str(tmp_path / "tok"), tmp_path / "hf")
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta == {"step": 10, "tokens": 10 * 4 * 256}  # iteration x global batch x seq length
