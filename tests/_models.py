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
    # the architectural flags of the real configs, widths shrunk (issue 12)
    "olmo": dict(num_key_value_heads=2, clip_qkv=8.0, eos_token_id=0, pad_token_id=0),  # OLMo-1 -hf
    "olmo3": dict(num_key_value_heads=2, sliding_window=8,  # Olmo-3: 3 sliding-window layers to 1 full
                  layer_types=["sliding_attention"] * 3 + ["full_attention"]),
    "olmoe": dict(num_key_value_heads=2, num_experts=64, num_experts_per_tok=8, intermediate_size=16,
                  eos_token_id=0, pad_token_id=0),  # OLMoE-1B-7B: 64 experts, top-8
    "smollm3": dict(num_key_value_heads=2, no_rope_layer_interval=4, pad_token_id=0, bos_token_id=0,
                    eos_token_id=0),  # no rotary embedding in every 4th layer
    "granite": dict(num_key_value_heads=2, residual_multiplier=0.22, embedding_multiplier=12.0,
                    attention_multiplier=0.0625, logits_scaling=8.0),  # granite-3 values
    "gemma3_text": dict(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                        layer_types=["sliding_attention"] * 3 + ["full_attention"]),
    "phi3": dict(num_key_value_heads=2, pad_token_id=0, eos_token_id=0, bos_token_id=0),
    "mixtral": dict(num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2),
    "qwen2_moe": dict(num_key_value_heads=2, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64),  # with the shared expert
    "qwen3_moe": dict(num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2,
                      moe_intermediate_size=32),
    "gpt2": dict(n_positions=256, bos_token_id=0, eos_token_id=0),  # Stanford CRFM runs: learned positions
    "bloom": dict(bos_token_id=0, eos_token_id=0, pad_token_id=0),  # ALiBi, LayerNorm after the embedding
    "falcon": dict(parallel_attn=True, new_decoder_architecture=False, multi_query=True, bias=False,
                   alibi=False, bos_token_id=0, eos_token_id=0),  # Falcon-7B: one shared norm, multi-query
    "falcon_new": dict(parallel_attn=True, new_decoder_architecture=True, num_kv_heads=2, bias=False,
                       alibi=False, bos_token_id=0, eos_token_id=0),  # Falcon-40B/180B: a norm each
    # per-layer config fields in the forms the hub serves them (issue 19), read from transformers'
    # configuration_<family>.py: a period and an index list (qwen2_moe: dense where (i + 1) %
    # decoder_sparse_step != 0 or i in mlp_only_layers), a threshold building layer_types
    # (qwen2: sliding from max_window_layers on), gemma3's older sliding_window_pattern, and the
    # Stanford CRFM gpt2 runs' attention scaled by 1 / (layer_idx + 1)
    "qwen2_moe_dense": dict(num_key_value_heads=2, num_experts=8, num_experts_per_tok=2,
                            moe_intermediate_size=32, shared_expert_intermediate_size=64,
                            decoder_sparse_step=2, mlp_only_layers=[0]),
    "qwen2_sliding": dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                          max_window_layers=1),
    "gemma3_pattern": dict(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                           sliding_window=8, sliding_window_pattern=2),
    "gpt2_crfm": dict(n_positions=256, bos_token_id=0, eos_token_id=0,
                      scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True),
}
# config variants of one model_type
ALIASES = {"gpt_neox_sequential": "gpt_neox", "falcon_new": "falcon", "qwen2_moe_dense": "qwen2_moe",
           "qwen2_sliding": "qwen2", "gemma3_pattern": "gemma3_text", "gpt2_crfm": "gpt2"}


def tiny_model(name: str, seed: int = 0, layers: int = 4, vocab: int = 256,
               hidden: int = 64) -> torch.nn.Module:
    """A random model of family `name` in fp32, eval mode. Weights scaled up so sublayers matter."""
    model_type = ALIASES.get(name, name)  # gpt2 and bloom map hidden_size etc. themselves
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
