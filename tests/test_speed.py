"""Speed measurement: KV-cache bytes scale with the attention layers kept; SDR as the study defines it."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from redundancy.drop import DropPlan, materialize
from redundancy.study.speed import measure_speed, sdr, speedup_range

from _models import tiny_model
from conftest import make_tokenizer


def test_kv_cache_scales_with_kept_attention(tmp_path):
    model = tiny_model("llama", vocab=512, layers=4)
    model.save_pretrained(tmp_path / "src")
    make_tokenizer().save_pretrained(tmp_path / "src")
    out = materialize(tmp_path / "src", DropPlan(attn=(1, 2, 3)), tmp_path / "attn3")
    dropped = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    full = measure_speed(model, prompt_tokens=16, new_tokens=8, batch=2, repeats=1)
    fast = measure_speed(dropped, prompt_tokens=16, new_tokens=8, batch=2, repeats=1)
    # 2 kv heads x 16 dims x (16 + 8 - 1) positions x batch 2 x fp32 x (k and v), per kept layer
    per_layer = 2 * 16 * 23 * 2 * 4 * 2
    assert full.kv_cache_bytes == 4 * per_layer and fast.kv_cache_bytes == 1 * per_layer
    # the study's count: prompt and generated tokens of every row, over the median time
    for r in (full, fast):
        assert r.tokens_per_s * r.seconds == pytest.approx(2 * (16 + 8)) and len(r.seconds_each) == 1
    assert full.seconds == full.seconds_each[0] and full.peak_memory_bytes is None  # CPU: no device peak


def test_sdr():
    # Mistral-7B Attn-8 in the study: 70.3 -> 69.8 at 1.23x: gamma ~ 0.03 (reported 0.02 from unrounded avgs)
    assert sdr(70.3, 69.8, 1.23) == pytest.approx((0.5 / 70.3 * 100) / 23)
    assert math.isnan(sdr(70.0, 69.0, 1.0))  # nothing gained: undefined, not infinite
    # a 1.23x median whose repeats range from 0.98x to 1.40x is noise: no gamma either
    assert math.isnan(sdr(70.3, 69.8, 1.23, spread=(0.98, 1.40)))
    assert sdr(70.3, 69.8, 1.23, spread=(1.10, 1.40)) == pytest.approx((0.5 / 70.3 * 100) / 23)
    assert speedup_range([1.0, 1.2], [0.5, 0.6]) == pytest.approx((1.0 / 0.6, 1.2 / 0.5))
