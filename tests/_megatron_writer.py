"""Write a Hugging Face Llama in Megatron-LM's tensor-parallel layout (the inverse of the converter),
written independently from the layout description, for the round-trip test."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def write_megatron(model, folder: Path, tp: int = 2, iteration: int = 10, global_batch: int = 4) -> None:
    c, sd = model.config, model.state_dict()
    hd, groups = c.hidden_size // c.num_attention_heads, c.num_key_value_heads
    q_per = c.num_attention_heads // groups
    args = argparse.Namespace(num_layers=c.num_hidden_layers, hidden_size=c.hidden_size,
                              ffn_hidden_size=c.intermediate_size, num_attention_heads=c.num_attention_heads,
                              num_query_groups=groups, seq_length=c.max_position_embeddings,
                              max_position_embeddings=c.max_position_embeddings, norm_epsilon=c.rms_norm_eps,
                              rotary_base=getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"],
                              global_batch_size=global_batch,
                              untie_embeddings_and_output_weights=not c.tie_word_embeddings)
    for r in range(tp):
        def rows(t):  # column-parallel split
            return t.chunk(tp, 0)[r].clone()

        def cols(t):  # row-parallel split
            return t.chunk(tp, 1)[r].clone()

        enc = {}
        for i in range(c.num_hidden_layers):
            p, h = f"layers.{i}.", f"model.layers.{i}."
            q = sd[h + "self_attn.q_proj.weight"].view(groups, q_per, hd, -1)
            k = sd[h + "self_attn.k_proj.weight"].view(groups, 1, hd, -1)
            v = sd[h + "self_attn.v_proj.weight"].view(groups, 1, hd, -1)
            qkv = torch.cat([q, k, v], dim=1)  # (groups, q_per + 2, hd, hidden)
            enc[p + "self_attention.query_key_value.weight"] = qkv.chunk(tp, 0)[r].reshape(-1, c.hidden_size).clone()
            enc[p + "self_attention.dense.weight"] = cols(sd[h + "self_attn.o_proj.weight"])
            enc[p + "mlp.dense_h_to_4h.weight"] = torch.cat([rows(sd[h + "mlp.gate_proj.weight"]),
                                                             rows(sd[h + "mlp.up_proj.weight"])])
            enc[p + "mlp.dense_4h_to_h.weight"] = cols(sd[h + "mlp.down_proj.weight"])
            enc[p + "input_norm.weight"] = sd[h + "input_layernorm.weight"].clone()
            enc[p + "post_attention_norm.weight"] = sd[h + "post_attention_layernorm.weight"].clone()
        enc["final_norm.weight"] = sd["model.norm.weight"].clone()
        lm = {"embedding": {"word_embeddings": {"weight": rows(sd["model.embed_tokens.weight"])}},
              "encoder": enc, "output_layer": {"weight": rows(sd["lm_head.weight"])}}
        out = folder / f"mp_rank_{r:02d}"
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"args": args, "iteration": iteration, "checkpoint_version": 3.0,
                    "model": {"language_model": lm}}, out / "model_optim_rng.pt")
