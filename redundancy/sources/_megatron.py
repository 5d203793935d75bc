"""Megatron-LM GPT checkpoints -> a Hugging Face Llama folder.

A checkpoint is one `iter_N/` folder (or `release/`), in one of two formats (Megatron-LM
megatron/training/checkpointing.py, `--ckpt-format`):
- `torch`: one `mp_rank_TT/model_optim_rng.pt` per tensor-parallel rank, `mp_rank_TT_PPP/` with
  pipeline stages, each holding `args`, `iteration` and this rank's `model` (its layers numbered from
  0 in every stage);
- `torch_dist` (the default since Megatron Core 0.10): a PyTorch distributed checkpoint
  (torch.distributed.checkpoint, `*.distcp` + `.metadata`), tensors at their global shape, plus
  `common.pt` (args, iteration) and `metadata.json` (sources/_megatron_dist.py).

Model keys, in one of two layouts, told apart by their keys:
- legacy (`megatron/model`): `model.language_model.{embedding,encoder,output_layer}`, layers under
  `encoder.layers.N.` with `self_attention.query_key_value`, `self_attention.dense`,
  `mlp.dense_h_to_4h`, `mlp.dense_4h_to_h`, `input_norm` and `post_attention_norm`;
- Megatron Core: `embedding.word_embeddings.weight`, `decoder.layers.N.self_attention.linear_qkv.weight`,
  `...linear_proj.weight`, `decoder.layers.N.mlp.linear_fc1.weight`, `...linear_fc2.weight`,
  `decoder.final_layernorm.weight`, `output_layer.weight`; the norms are `input_layernorm.weight` and
  `pre_mlp_layernorm.weight` with the local spec, `self_attention.linear_qkv.layer_norm_weight` and
  `mlp.linear_fc1.layer_norm_weight` with Transformer Engine's (megatron/core/models/gpt/
  gpt_layer_specs.py), plus `*._extra_state` (TE's FP8 metadata: a BytesIO before TE 2.0, a tensor since).
Per layer and rank, in both: the fused QKV rows are (groups_r, q_per_group + 2, head_dim) ordered
(the group's q heads, then one k and one v head; megatron/core/transformer/attention.py
`get_query_key_value_tensors`); fc1 holds this rank's gate rows then its up rows (`--swiglu`); proj
and fc2 are split by columns. The number of key/value heads is `num_query_groups` only with
`--group-query-attention` (`args.group_query_attention`); without it every head has its own.
The norm epsilon is `args.norm_epsilon`, or `args.layernorm_epsilon` (MAP-Neo's fork, and Megatron-LM
since commit 639c08a). Tokens seen: `consumed_train_samples x seq_length` when the args hold it
(Megatron's own count, right across batch-size ramps), else iteration x global batch x seq.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_dir, check_output
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
# args a Llama cannot express, with the value a Llama needs (checked when the args hold them)
_LLAMA_ARGS = {"swiglu": True, "add_bias_linear": False, "add_qkv_bias": False, "normalization": "RMSNorm",
               "position_embedding_type": "rope", "rotary_percent": 1.0, "qk_layernorm": False,
               "rotary_interleaved": False, "use_rope_scaling": False, "apply_layernorm_1p": False,
               "num_experts": None, "multi_latent_attention": False}
_RANK = re.compile(r"^mp_rank_(\d+)(?:_(\d+))?$")


def is_megatron_checkpoint(folder: Path) -> bool:
    """True for an `iter_N/` folder in either format (torch: mp_rank_*/; torch_dist: common.pt)."""
    folder = Path(folder)
    return (folder / "common.pt").is_file() or any(folder.glob("mp_rank_*/model_optim_rng.pt"))


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


def load_ranks(folder: Path) -> list[dict[str, Any]]:
    """A `--ckpt-format torch` checkpoint: one dict per tensor-parallel rank (args, iteration, model),
    its pipeline stages merged into one model with layers numbered across stages.
    Raises SeriesError: no rank file, a missing rank or stage, a refused or unreadable file."""
    files = {}
    for f in sorted(Path(folder).glob("mp_rank_*/model_optim_rng.pt")):
        if m := _RANK.match(f.parent.name):
            files[(int(m[1]), int(m[2] or 0))] = f
    if not files:
        raise SeriesError(f"{folder} holds no mp_rank_*/model_optim_rng.pt: not a Megatron-LM checkpoint")
    tps, pps = sorted({t for t, _ in files}), sorted({p for _, p in files})
    if set(files) != {(t, p) for t in tps for p in pps} or tps != list(range(len(tps))) \
            or pps != list(range(len(pps))):
        raise SeriesError(f"{folder} lacks some mp_rank_TT_PPP folders (found {sorted(files)}); download "
                          "every tensor- and pipeline-parallel rank")
    ranks = []
    for t in tps:
        stages = [safe_load(files[(t, p)]) for p in pps]
        if "model" not in stages[0]:
            raise SeriesError(f"{files[(t, 0)]} holds no 'model' (keys {sorted(stages[0])[:6]}): virtual "
                              "pipeline stages (model0, model1...) are not converted")
        ranks.append({**stages[0], "model": _merge_stages([_flat(s["model"]) for s in stages])})
    return ranks


def _merge_stages(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Pipeline stages' flat state dicts -> one, stage s's layer i renamed to (layers before s) + i."""
    if len(models) == 1:
        return models[0]
    layout = detect_layout([k for m in models for k in m])
    merged, offset = {}, 0
    for model in models:
        prefix = next((p for p in _TOP[layout]["layers"] if any(k.startswith(p) for k in model)), None)
        count = 0
        for key, value in model.items():
            if prefix and key.startswith(prefix):
                i, rest = key[len(prefix):].split(".", 1)
                count = max(count, int(i) + 1)
                key = f"{prefix}{int(i) + offset}.{rest}"
            merged.setdefault(key, value)  # a tied output layer repeats the first stage's embedding
        offset += count
    return merged


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


def heads(a: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) from Megatron's args: key/value heads are
    `num_query_groups` only with `--group-query-attention` (arguments.py: otherwise the default 1
    is stored and means nothing)."""
    n = int(a.num_attention_heads)
    gqa = getattr(a, "group_query_attention", None)
    groups = getattr(a, "num_query_groups", None)
    kv = int(groups) if groups and (gqa or gqa is None) else n
    hd = int(getattr(a, "kv_channels", None) or a.hidden_size // n)
    return n, kv, hd


def norm_epsilon(a: Any) -> float:
    """`args.norm_epsilon`, else `args.layernorm_epsilon`. Raises SeriesError when neither is there."""
    for name in ("norm_epsilon", "layernorm_epsilon"):
        if getattr(a, name, None) is not None:
            return float(getattr(a, name))
    raise SeriesError("the Megatron args hold neither norm_epsilon nor layernorm_epsilon; the norms "
                      "cannot be converted without it")


def _check_llama(a: Any) -> None:
    for name, want in _LLAMA_ARGS.items():
        have = getattr(a, name, want)
        if name == "num_experts" and not have:
            continue
        if isinstance(have, torch.Tensor) or have != want:
            raise SeriesError(f"Megatron args {name}={have!r}: a Llama needs {name}={want!r}, so this model "
                              "cannot be converted to one")


def _layer(ranks: list[_Rank], i: int, a: Any) -> dict[str, torch.Tensor]:
    n, kv, hd = heads(a)
    q_per = n // kv
    names = _LAYER[ranks[0].layout]
    part = {p: [r.take(names[p], f"{r.prefix}{i}.") for r in ranks] for p in names}
    rows = sum(t.shape[0] for t in part["qkv"])
    if rows != (n + 2 * kv) * hd:
        raise SeriesError(f"layer {i}'s fused QKV has {rows} rows, not (heads {n} + 2 x key/value heads "
                          f"{kv}) x head dim {hd}: the args (num_query_groups, group_query_attention) do not "
                          "match the weights")
    hidden = part["qkv"][0].shape[1]
    qkv = [t.reshape(-1, q_per + 2, hd, hidden) for t in part["qkv"]]  # (groups_r, q_per + 2, hd, hidden)
    gate_up = [t.chunk(2, dim=0) for t in part["fc1"]]  # per rank: its gate rows, then its up rows
    h = f"model.layers.{i}."
    return {
        h + "self_attn.q_proj.weight": torch.cat([t[:, :q_per].reshape(-1, hidden) for t in qkv]),
        h + "self_attn.k_proj.weight": torch.cat([t[:, q_per].reshape(-1, hidden) for t in qkv]),
        h + "self_attn.v_proj.weight": torch.cat([t[:, q_per + 1].reshape(-1, hidden) for t in qkv]),
        h + "self_attn.o_proj.weight": torch.cat(part["proj"], 1),
        h + "mlp.gate_proj.weight": torch.cat([g for g, _ in gate_up]),
        h + "mlp.up_proj.weight": torch.cat([u for _, u in gate_up]),
        h + "mlp.down_proj.weight": torch.cat(part["fc2"], 1),
        h + "input_layernorm.weight": part["norm1"][0],  # replicated on every rank
        h + "post_attention_layernorm.weight": part["norm2"][0],
    }


def to_llama_state(ranks: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], Any]:
    """Merge the tensor-parallel ranks (either layout; `model` flat or nested, pipeline stages already
    merged) into one Hugging Face Llama state dict; returns it and the args. Raises SeriesError: args
    a Llama cannot express, weights that do not fit them, or weights the conversion would drop."""
    a = ranks[0]["args"]
    _check_llama(a)
    layout = detect_layout(list(_flat(ranks[0]["model"])))
    rs = [_Rank(r["model"], layout) for r in ranks]
    top = _TOP[layout]
    state = {"model.embed_tokens.weight": torch.cat([r.take(top["embed"]) for r in rs])}
    for i in range(a.num_layers):
        state.update(_layer(rs, i, a))
    state["model.norm.weight"] = rs[0].take(top["final_norm"])
    if any(k in rs[0].sd for k in top["output"]):
        out = torch.cat([r.take(top["output"]) for r in rs])
        if getattr(a, "untie_embeddings_and_output_weights", True):
            state["lm_head.weight"] = out
    if left := rs[0].leftovers():
        raise SeriesError(f"Megatron checkpoint holds weights the Llama conversion would drop: {left[:4]} "
                          "(biases, learned positions or another architecture); it cannot be scored as Llama")
    return state, a


def read_megatron(folder: Path) -> tuple[dict[str, torch.Tensor], Any, int]:
    """A Megatron checkpoint folder (either format) -> (Llama state dict, args, iteration).
    Raises SeriesError (load_ranks, sources._megatron_dist.load_dist, to_llama_state)."""
    folder = Path(folder)
    if (folder / "common.pt").is_file():
        from ._megatron_dist import load_dist
        ranks = [load_dist(folder)]
    else:
        ranks = load_ranks(folder)
    state, a = to_llama_state(ranks)
    return state, a, int(ranks[0]["iteration"])


def tokens_seen(a: Any, iteration: int) -> int:
    """Megatron's consumed_train_samples x seq_length, else iteration x global batch x seq length."""
    samples = getattr(a, "consumed_train_samples", None)
    if samples is None:
        samples = iteration * a.global_batch_size
    return int(samples) * int(a.seq_length)


def llama_config(a: Any, vocab: int):
    from transformers import LlamaConfig
    n, kv, hd = heads(a)
    return LlamaConfig(hidden_size=a.hidden_size, intermediate_size=a.ffn_hidden_size,
                       num_hidden_layers=a.num_layers, num_attention_heads=n, num_key_value_heads=kv,
                       head_dim=hd, max_position_embeddings=getattr(a, "max_position_embeddings", None)
                       or a.seq_length, rms_norm_eps=norm_epsilon(a),
                       rope_theta=getattr(a, "rotary_base", 10000), vocab_size=vocab,
                       tie_word_embeddings=not getattr(a, "untie_embeddings_and_output_weights", True))


def _write(folder: Path, tokenizer: str, out: Path, overwrite: bool) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    state, a, step = read_megatron(folder)
    config = llama_config(a, state["model.embed_tokens.weight"].shape[0])
    model = AutoModelForCausalLM.from_config(config, dtype=state["model.embed_tokens.weight"].dtype)
    model.load_state_dict(state, strict=not config.tie_word_embeddings)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(tmp)
        (tmp / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": tokens_seen(a, step)}))
    return out


def _need_tokenizer(tokenizer: str | None) -> str:
    if tokenizer is None:
        raise SeriesError("a Megatron checkpoint carries no tokenizer: pass --tokenizer REPO_OR_FOLDER "
                          "(for MAP-Neo: m-a-p/neo_7b)")
    return str(tokenizer)


def convert_cached(folder: Path, tokenizer: str | None, out: Path) -> Path:
    """`out` made once from `folder` (the hub crawl's and local:DIR's cache); an `out` holding
    config.json is complete (atomic_dir) and kept. Raises SeriesError (convert_megatron)."""
    out = Path(out)
    if (out / "config.json").exists():
        return out
    return _write(Path(folder), _need_tokenizer(tokenizer), out, overwrite=True)


def convert_megatron(path: str | Path, *, tokenizer: str | Path, out: str | Path,
                     overwrite: bool = False) -> Path:
    """Write `out`, a Hugging Face Llama folder (weights in the checkpoint's dtype, the tokenizer,
    and checkpoint.json: {"step": iteration, "tokens": tokens seen}), from `path`, one Megatron-LM
    GPT checkpoint folder (`iter_N/`, `--ckpt-format torch` with tensor- and pipeline-parallel ranks,
    or `torch_dist`; formats and key layouts in this module's docstring). Written atomically.

    tokenizer: a Hugging Face tokenizer repo or folder (Megatron checkpoints carry none).
    Nothing the checkpoint's pickles name is imported or run (sources/_safe_pickle.py).

    Raises:
        OutputError: `out` is `path`, inside it or contains it; or exists, not empty, without `overwrite`.
        SeriesError: not a Megatron checkpoint, a rank missing, a refused or unreadable file, args a
            Llama cannot express (biases, LayerNorm, MoE...), weights that do not match the args.
    """
    path = Path(path)
    if not path.is_dir():
        raise SeriesError(f"{path} is not a folder: give one Megatron checkpoint folder (iter_N/)")
    if not is_megatron_checkpoint(path):
        raise SeriesError(f"{path} holds neither mp_rank_*/model_optim_rng.pt nor common.pt: not a "
                          "Megatron-LM checkpoint folder (give one iter_N/)")
    out = check_output(out, [path], overwrite)
    return _write(path, _need_tokenizer(tokenizer), out, overwrite)
