"""Write a Hugging Face Llama as a Megatron-LM tensor-parallel checkpoint, in either layout.

Kept only where the real library does not write the checkpoint: tests/data/megatron/ holds what
megatron-core 0.16.1 wrote (tests/make_megatron_fixtures.py); this writer serves the legacy
`megatron/model` layout (test_megatron.test_legacy_layout_round_trip: the legacy model was not run
with the real library) and test_crawl's MAP-Neo hub history, which cuts given Hugging Face models
(512-token vocabulary, one seed per iteration) so their scores can be compared with the originals'.

Written from Megatron's own code, not from our converter (multimodal-art-projection/Megatron-LM-NEO,
the fork MAP-Neo trained with, commit c2054d20):
- megatron/checkpointing.py `save_checkpoint` (L243-300): one `mp_rank_XX/model_optim_rng.pt` per
  rank holding args (the argparse Namespace), checkpoint_version 3.0, iteration, model, optimizer,
  opt_param_scheduler and rng_state (`get_rng_state`, L217: python, numpy and torch RNG states);
  distrib_optim.pt beside it with --use-distributed-optimizer.
- tools/checkpoint/loader_megatron_core.py (L264-355): Megatron Core key names; the input norm is
  `linear_qkv.layer_norm_weight`, the pre-MLP norm `linear_fc1.layer_norm_weight`
  (TELayerNormColumnParallelLinear, megatron/core/models/gpt/gpt_layer_specs.py); concat dims.
- megatron/model/transformer.py / megatron/core/transformer/attention.py: QKV rows per query group.
- Transformer Engine < 2.0 `get_extra_state` returns an io.BytesIO holding `torch.save(state)`
  (None without FP8): every TE module adds `<name>._extra_state`.
- megatron/training.py L244: `args.model_type` is a `megatron.core.enums.ModelType`.
"""
from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

import numpy as np
import torch


def _args(c, global_batch: int, consumed: int | None, model_type) -> argparse.Namespace:
    args = argparse.Namespace(
        num_layers=c.num_hidden_layers,
        hidden_size=c.hidden_size,
        ffn_hidden_size=c.intermediate_size,
        num_attention_heads=c.num_attention_heads,
        num_query_groups=c.num_key_value_heads,
        group_query_attention=c.num_key_value_heads != c.num_attention_heads,
        seq_length=c.max_position_embeddings,
        max_position_embeddings=c.max_position_embeddings,
        norm_epsilon=c.rms_norm_eps,
        rotary_base=getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"],
        global_batch_size=global_batch,
        untie_embeddings_and_output_weights=not c.tie_word_embeddings,
        params_dtype=torch.float32,
        swiglu=True,
        use_mcore_models=True,
    )
    if consumed is not None:
        args.consumed_train_samples = consumed
    if model_type is not None:
        args.model_type = model_type
    return args


def _te_extra_state() -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(None, buf)  # no FP8 recipe: the state is None
    return buf


def _layer_parts(sd: dict, c, i: int, tp: int, r: int) -> dict[str, torch.Tensor]:
    """Canonical per-rank parts of layer i: qkv, proj, fc1, fc2, norm1, norm2."""
    hd, groups = c.hidden_size // c.num_attention_heads, c.num_key_value_heads
    q_per, h = c.num_attention_heads // groups, f"model.layers.{i}."
    q = sd[h + "self_attn.q_proj.weight"].view(groups, q_per, hd, -1)
    k = sd[h + "self_attn.k_proj.weight"].view(groups, 1, hd, -1)
    v = sd[h + "self_attn.v_proj.weight"].view(groups, 1, hd, -1)
    qkv = torch.cat([q, k, v], dim=1)  # (groups, q_per + 2, hd, hidden)
    rows = lambda t: t.chunk(tp, 0)[r].clone()  # noqa: E731 - column-parallel split
    cols = lambda t: t.chunk(tp, 1)[r].clone()  # noqa: E731 - row-parallel split
    return {
        "qkv": qkv.chunk(tp, 0)[r].reshape(-1, c.hidden_size).clone(),
        "proj": cols(sd[h + "self_attn.o_proj.weight"]),
        "fc1": torch.cat([rows(sd[h + "mlp.gate_proj.weight"]), rows(sd[h + "mlp.up_proj.weight"])]),
        "fc2": cols(sd[h + "mlp.down_proj.weight"]),
        "norm1": sd[h + "input_layernorm.weight"].clone(),
        "norm2": sd[h + "post_attention_layernorm.weight"].clone(),
    }


def _legacy(sd: dict, c, tp: int, r: int) -> dict:
    names = {
        "qkv": "self_attention.query_key_value.weight",
        "proj": "self_attention.dense.weight",
        "fc1": "mlp.dense_h_to_4h.weight",
        "fc2": "mlp.dense_4h_to_h.weight",
        "norm1": "input_norm.weight",
        "norm2": "post_attention_norm.weight",
    }
    enc = {
        f"layers.{i}.{names[k]}": t
        for i in range(c.num_hidden_layers)
        for k, t in _layer_parts(sd, c, i, tp, r).items()
    }
    enc["final_norm.weight"] = sd["model.norm.weight"].clone()
    return {
        "language_model": {
            "embedding": {
                "word_embeddings": {"weight": sd["model.embed_tokens.weight"].chunk(tp, 0)[r].clone()}
            },
            "encoder": enc,
            "output_layer": {"weight": sd["lm_head.weight"].chunk(tp, 0)[r].clone()},
        }
    }


def _core(sd: dict, c, tp: int, r: int) -> dict:
    names = {
        "qkv": "self_attention.linear_qkv.weight",
        "proj": "self_attention.linear_proj.weight",
        "fc1": "mlp.linear_fc1.weight",
        "fc2": "mlp.linear_fc2.weight",
        "norm1": "self_attention.linear_qkv.layer_norm_weight",
        "norm2": "mlp.linear_fc1.layer_norm_weight",
    }
    out = {"embedding.word_embeddings.weight": sd["model.embed_tokens.weight"].chunk(tp, 0)[r].clone()}
    for i in range(c.num_hidden_layers):
        p = f"decoder.layers.{i}."
        out.update({p + names[k]: t for k, t in _layer_parts(sd, c, i, tp, r).items()})
        for te in (
            "self_attention.linear_qkv",
            "self_attention.core_attention",
            "self_attention.linear_proj",
            "mlp.linear_fc1",
            "mlp.linear_fc2",
        ):
            out[f"{p}{te}._extra_state"] = _te_extra_state()
    out["decoder.final_layernorm.weight"] = sd["model.norm.weight"].clone()
    out["output_layer.weight"] = sd["lm_head.weight"].chunk(tp, 0)[r].clone()
    return out


def write_megatron(
    model,
    folder: Path,
    tp: int = 2,
    iteration: int = 10,
    global_batch: int = 4,
    layout: str = "legacy",
    consumed_samples: int | None = None,
    model_type=None,
) -> None:
    """folder/mp_rank_XX/model_optim_rng.pt for each of `tp` ranks."""
    c, sd = model.config, model.state_dict()
    args = _args(c, global_batch, consumed_samples, model_type)
    rng = {
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        "rng_tracker_states": {},
    }
    for r in range(tp):
        out = folder / f"mp_rank_{r:02d}"
        out.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "args": args,
                "checkpoint_version": 3.0,
                "iteration": iteration,
                "model": (_core if layout == "core" else _legacy)(sd, c, tp, r),
                "optimizer": {"optimizer": {"param_groups": [{"lr": 3e-4, "params": [0]}]}},
                "opt_param_scheduler": {"max_lr": 3e-4, "num_steps": iteration * global_batch},
                "rng_state": [rng],
            },
            out / "model_optim_rng.pt",
        )
