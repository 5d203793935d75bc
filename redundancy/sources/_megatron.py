"""Megatron-LM GPT checkpoints (tensor-parallel ranks) -> a Hugging Face Llama folder.

Each rank's `mp_rank_XX/model_optim_rng.pt` holds `args`, `iteration` and `model`, in one of two
layouts, told apart by their keys:
- legacy (`megatron/model`): `model.language_model.{embedding,encoder,output_layer}`, layers under
  `encoder.layers.N.` with `self_attention.query_key_value`, `self_attention.dense`,
  `mlp.dense_h_to_4h`, `mlp.dense_4h_to_h`, `input_norm` and `post_attention_norm`;
- Megatron Core (`--use-mcore-models`, MAP-Neo): a flat dict, `embedding.word_embeddings.weight`,
  `decoder.layers.N.self_attention.linear_qkv.{weight,layer_norm_weight}` (Transformer Engine keeps
  the input norm inside the QKV linear), `...linear_proj.weight`,
  `decoder.layers.N.mlp.linear_fc1.{weight,layer_norm_weight}`, `...linear_fc2.weight`,
  `decoder.final_layernorm.weight`, `output_layer.weight`, plus `*._extra_state` (FP8 metadata).
Per layer and rank, in both: the fused QKV rows are (groups_r, q_per_group + 2, head_dim) ordered
(the group's q heads, then one k and one v head); fc1 holds this rank's gate rows then its up rows;
proj and fc2 are split by columns. Tokens seen: `consumed_train_samples x seq_length` when the args
hold it (Megatron's own count, right across batch-size ramps), else iteration x global batch x seq.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_dir
from ..errors import SeriesError
from ._safe_pickle import safe_load

# canonical part -> key candidates, relative to the layer prefix
_LAYER = {
    "legacy": {"qkv": ["self_attention.query_key_value.weight"], "proj": ["self_attention.dense.weight"],
               "fc1": ["mlp.dense_h_to_4h.weight"], "fc2": ["mlp.dense_4h_to_h.weight"],
               "norm1": ["input_norm.weight", "input_layernorm.weight"],
               "norm2": ["post_attention_norm.weight", "post_attention_layernorm.weight"]},
    "core": {"qkv": ["self_attention.linear_qkv.weight"], "proj": ["self_attention.linear_proj.weight"],
             "fc1": ["mlp.linear_fc1.weight"], "fc2": ["mlp.linear_fc2.weight"],
             "norm1": ["self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight"],
             "norm2": ["mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"]},
}
_TOP = {
    "legacy": {"layers": ["language_model.encoder.layers.", "language_model.transformer.layers."],
               "embed": ["language_model.embedding.word_embeddings.weight"],
               "final_norm": [f"language_model.{e}.{n}.weight" for e in ("encoder", "transformer")
                              for n in ("final_norm", "final_layernorm")],
               "output": ["language_model.output_layer.weight"]},
    "core": {"layers": ["decoder.layers."], "embed": ["embedding.word_embeddings.weight"],
             "final_norm": ["decoder.final_layernorm.weight"], "output": ["output_layer.weight"]},
}


def load_ranks(folder: Path) -> list[dict[str, Any]]:
    """Every tensor-parallel rank's checkpoint, read with the restricted unpickler."""
    files = sorted(Path(folder).glob("mp_rank_*/model_optim_rng.pt"))
    if not files:
        raise SeriesError(f"{folder} holds no mp_rank_*/model_optim_rng.pt: not a Megatron-LM checkpoint")
    if any(f.parent.name.count("_") > 2 for f in files):  # mp_rank_TT_PPP: pipeline stages
        raise SeriesError(f"{folder} is pipeline-parallel ({files[0].parent.name}); only tensor-parallel "
                          "Megatron checkpoints are converted: merge the stages with Megatron's tools first")
    return [safe_load(f) for f in files]


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested state dict -> {dotted key: value}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def detect_layout(keys: list[str]) -> str:
    """"legacy" or "core", from a rank's flattened model keys."""
    if any(k.startswith("language_model.") for k in keys):
        return "legacy"
    if any(k.startswith("decoder.layers.") for k in keys):
        return "core"
    raise SeriesError(f"unknown Megatron layout (keys such as {sorted(keys)[:4]}); this converter reads "
                      "the legacy GPT model and Megatron Core's GPTModel")


class _Rank:
    """One rank's flattened weights; `take` marks what was used so leftovers can be refused."""

    def __init__(self, model: dict, layout: str) -> None:
        self.sd, self.layout, self.used = _flat(model), layout, set()
        self.prefix = next((p for p in _TOP[layout]["layers"] if any(k.startswith(p) for k in self.sd)), "")

    def take(self, candidates: list[str], where: str = "") -> torch.Tensor:
        for key in candidates:
            if (full := where + key) in self.sd:
                self.used.add(full)
                return self.sd[full]
        raise SeriesError(f"Megatron checkpoint ({self.layout} layout) lacks {where + candidates[0]!r}")

    def leftovers(self) -> list[str]:
        return [k for k in self.sd if k not in self.used and not k.endswith(("._extra_state", "inv_freq"))]


def _layer(ranks: list[_Rank], i: int, a: Any) -> dict[str, torch.Tensor]:
    hd = a.hidden_size // a.num_attention_heads
    groups = getattr(a, "num_query_groups", None) or a.num_attention_heads
    q_per = a.num_attention_heads // groups
    names = _LAYER[ranks[0].layout]
    part = {n: [r.take(names[n], f"{r.prefix}{i}.") for r in ranks] for n in names}
    qkv = [t.view(-1, q_per + 2, hd, a.hidden_size) for t in part["qkv"]]  # (groups_r, q_per + 2, hd, hidden)
    gate_up = [t.chunk(2, dim=0) for t in part["fc1"]]  # per rank: its gate rows, then its up rows
    h = f"model.layers.{i}."
    return {
        h + "self_attn.q_proj.weight": torch.cat([t[:, :q_per].reshape(-1, a.hidden_size) for t in qkv]),
        h + "self_attn.k_proj.weight": torch.cat([t[:, q_per].reshape(-1, a.hidden_size) for t in qkv]),
        h + "self_attn.v_proj.weight": torch.cat([t[:, q_per + 1].reshape(-1, a.hidden_size) for t in qkv]),
        h + "self_attn.o_proj.weight": torch.cat(part["proj"], 1),
        h + "mlp.gate_proj.weight": torch.cat([g for g, _ in gate_up]),
        h + "mlp.up_proj.weight": torch.cat([u for _, u in gate_up]),
        h + "mlp.down_proj.weight": torch.cat(part["fc2"], 1),
        h + "input_layernorm.weight": part["norm1"][0],  # replicated on every rank
        h + "post_attention_layernorm.weight": part["norm2"][0],
    }


def to_llama_state(ranks: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], Any]:
    """Merge the ranks (either layout) into one Hugging Face Llama state dict; returns it and the args."""
    a = ranks[0]["args"]
    layout = detect_layout(list(_flat(ranks[0]["model"])))
    rs = [_Rank(r["model"], layout) for r in ranks]
    top = _TOP[layout]
    state = {"model.embed_tokens.weight": torch.cat([r.take(top["embed"]) for r in rs])}
    for i in range(a.num_layers):
        state.update(_layer(rs, i, a))
    state["model.norm.weight"] = rs[0].take(top["final_norm"])
    if any(k in rs[0].sd for k in top["output"]):
        state["lm_head.weight"] = torch.cat([r.take(top["output"]) for r in rs])
    if left := rs[0].leftovers():
        raise SeriesError(f"Megatron checkpoint holds weights the Llama conversion would drop: {left[:4]} "
                          "(biases, learned positions or another architecture); it cannot be scored as Llama")
    return state, a


def tokens_seen(a: Any, iteration: int) -> int:
    """Megatron's consumed_train_samples x seq_length, else iteration x global batch x seq length."""
    samples = getattr(a, "consumed_train_samples", None)
    if samples is None:
        samples = iteration * a.global_batch_size
    return int(samples) * int(a.seq_length)


def llama_config(a: Any, vocab: int):
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=a.hidden_size, intermediate_size=a.ffn_hidden_size,
                       num_hidden_layers=a.num_layers, num_attention_heads=a.num_attention_heads,
                       num_key_value_heads=getattr(a, "num_query_groups", None) or a.num_attention_heads,
                       max_position_embeddings=getattr(a, "max_position_embeddings", None) or a.seq_length,
                       rms_norm_eps=getattr(a, "norm_epsilon", 1e-5),
                       rope_theta=getattr(a, "rotary_base", 10000), vocab_size=vocab,
                       tie_word_embeddings=not getattr(a, "untie_embeddings_and_output_weights", True))


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
    step = int(ranks[0]["iteration"])
    with atomic_dir(out, overwrite=True) as tmp:  # an `out` without config.json is incomplete
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(tmp)
        (tmp / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": tokens_seen(a, step)}))
    return out
