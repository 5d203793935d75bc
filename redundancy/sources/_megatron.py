"""Megatron-LM GPT checkpoints (tensor-parallel ranks) -> a Hugging Face Llama folder.

Layout read (legacy `model_optim_rng.pt`, one per rank in `mp_rank_XX/`): `model.language_model`
holds `embedding.word_embeddings.weight` (vocab-parallel, rows split), `encoder.layers.{i}.*` and
`output_layer.weight`. Per layer and rank:
  self_attention.query_key_value.weight  (groups_r * (q_per_group + 2) * head_dim, hidden): per
      query group, its q heads, then one k and one v head (column-parallel: rows split by group)
  self_attention.dense.weight            (hidden, heads_r * head_dim): row-parallel, columns split
  mlp.dense_h_to_4h.weight               (2 * ffn_r, hidden): this rank's gate rows, then its up rows
  mlp.dense_4h_to_h.weight               (hidden, ffn_r): row-parallel
  input_layernorm / post_attention_layernorm (or *_norm): replicated
Tokens seen = iteration x global batch size x sequence length, read from the checkpoint's args.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import SeriesError


def load_ranks(folder: Path) -> list[dict[str, Any]]:
    files = sorted(Path(folder).glob("mp_rank_*/model_optim_rng.pt"))
    if not files:
        raise SeriesError(f"{folder} holds no mp_rank_*/model_optim_rng.pt: not a Megatron-LM checkpoint")
    # Megatron pickles its argparse Namespace next to the tensors, so weights_only cannot load it;
    # the repo is one the user chose to crawl.
    return [torch.load(f, map_location="cpu", weights_only=False) for f in files]


def _get(sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    for k in (key, key.replace("layernorm", "norm"), key.replace("_norm", "_layernorm")):
        if k in sd:
            return sd[k]
    raise SeriesError(f"Megatron checkpoint lacks {key!r}; this converter knows GPT/Llama layouts")


def _layer(sds: list[dict], i: int, a: Any) -> dict[str, torch.Tensor]:
    p, hd = f"layers.{i}.", a.hidden_size // a.num_attention_heads
    groups = getattr(a, "num_query_groups", None) or a.num_attention_heads
    q_per = a.num_attention_heads // groups
    qs, ks, vs, gates, ups = [], [], [], [], []
    for sd in sds:
        qkv = _get(sd, p + "self_attention.query_key_value.weight")
        qkv = qkv.view(-1, q_per + 2, hd, a.hidden_size)  # (groups_r, q_per + 2, hd, hidden)
        qs.append(qkv[:, :q_per].reshape(-1, a.hidden_size))
        ks.append(qkv[:, q_per].reshape(-1, a.hidden_size))
        vs.append(qkv[:, q_per + 1].reshape(-1, a.hidden_size))
        gate, up = _get(sd, p + "mlp.dense_h_to_4h.weight").chunk(2, dim=0)
        gates.append(gate), ups.append(up)
    h = f"model.layers.{i}."
    return {
        h + "self_attn.q_proj.weight": torch.cat(qs), h + "self_attn.k_proj.weight": torch.cat(ks),
        h + "self_attn.v_proj.weight": torch.cat(vs),
        h + "self_attn.o_proj.weight": torch.cat([_get(sd, p + "self_attention.dense.weight") for sd in sds], 1),
        h + "mlp.gate_proj.weight": torch.cat(gates), h + "mlp.up_proj.weight": torch.cat(ups),
        h + "mlp.down_proj.weight": torch.cat([_get(sd, p + "mlp.dense_4h_to_h.weight") for sd in sds], 1),
        h + "input_layernorm.weight": _get(sds[0], p + "input_layernorm.weight"),
        h + "post_attention_layernorm.weight": _get(sds[0], p + "post_attention_layernorm.weight"),
    }


def to_llama_state(ranks: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], Any]:
    """Merge the ranks into one Hugging Face Llama state dict; returns it and the Megatron args."""
    a = ranks[0]["args"]
    lms = [r["model"]["language_model"] for r in ranks]
    encs = [lm.get("encoder", lm.get("transformer")) for lm in lms]
    state = {"model.embed_tokens.weight": torch.cat([lm["embedding"]["word_embeddings"]["weight"] for lm in lms])}
    for i in range(a.num_layers):
        state.update(_layer(encs, i, a))
    state["model.norm.weight"] = _get(encs[0], "final_layernorm.weight")
    if "output_layer" in lms[0]:
        state["lm_head.weight"] = torch.cat([lm["output_layer"]["weight"] for lm in lms])
    return state, a


def llama_config(a: Any, vocab: int):
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=a.hidden_size, intermediate_size=a.ffn_hidden_size,
                       num_hidden_layers=a.num_layers, num_attention_heads=a.num_attention_heads,
                       num_key_value_heads=getattr(a, "num_query_groups", None) or a.num_attention_heads,
                       max_position_embeddings=getattr(a, "max_position_embeddings", None) or a.seq_length,
                       rms_norm_eps=getattr(a, "norm_epsilon", 1e-5), rope_theta=getattr(a, "rotary_base", 10000),
                       vocab_size=vocab, tie_word_embeddings=not getattr(a, "untie_embeddings_and_output_weights", True))


def convert_megatron(folder: Path, tokenizer: str | None, out: Path) -> Path:
    """Write `out` (a Hugging Face Llama folder with checkpoint.json) from a Megatron folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return out
    if tokenizer is None:
        raise SeriesError("a Megatron history carries no tokenizer: pass --tokenizer REPO_OR_FOLDER "
                          "(for MAP-Neo: m-a-p/neo_7b)")
    ranks = load_ranks(folder)
    state, a = to_llama_state(ranks)
    config = llama_config(a, state["model.embed_tokens.weight"].shape[0])
    model = AutoModelForCausalLM.from_config(config, dtype=state["model.embed_tokens.weight"].dtype)
    model.load_state_dict(state, strict=not config.tie_word_embeddings)
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(tmp)
    step = int(ranks[0]["iteration"])
    (tmp / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": step * a.global_batch_size * a.seq_length}))
    tmp.rename(out)
    return out
