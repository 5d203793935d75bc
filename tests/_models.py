"""Tiny random models, one per family in the table, for the tests."""
from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              vocab_size=256, max_position_embeddings=256)

CONFIGS: dict[str, dict] = {
    "llama": dict(num_key_value_heads=2),
    "mistral": dict(num_key_value_heads=2, sliding_window=None),
    "qwen2": dict(num_key_value_heads=2),
    "qwen3": dict(num_key_value_heads=2, head_dim=16),
    "gemma2": dict(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16),
    "olmo2": dict(num_key_value_heads=2),
    "gpt_neox": dict(use_parallel_residual=True, rotary_pct=0.25, eos_token_id=0, bos_token_id=0),
    "gpt_neox_sequential": dict(use_parallel_residual=False, rotary_pct=0.25, eos_token_id=0,
                                bos_token_id=0),
}


def tiny_model(name: str, seed: int = 0, layers: int = 4, vocab: int = 256,
               hidden: int = 64) -> torch.nn.Module:
    """A random model of family `name` in fp32, eval mode. Weights scaled up so sublayers matter."""
    model_type = "gpt_neox" if name.startswith("gpt_neox") else name
    config = AutoConfig.for_model(model_type, **{**COMMON, "num_hidden_layers": layers,
                                                 "vocab_size": vocab, "hidden_size": hidden,
                                                 "intermediate_size": 2 * hidden, **CONFIGS[name]})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # std 0.02 init makes every cosine ~1; larger weights give spread
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    return model.eval()
