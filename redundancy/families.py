"""The family table: where a decoder's layers, attention, MLP and norms live, and how its residual is formed.

One table, no per-family modeling code. Every entry names submodules relative to a decoder layer.
For layer l with input h (the residual stream entering it) and output o:

| residual form | attn X -> Y | mlp X -> Y | "module output added back" |
|---|---|---|---|
| sequential pre-norm | h -> h + a | m0 -> o | a = attn(norm(h)), m = mlp(norm(m0)) |
| pre-norm, mixture of experts | h -> h + a | m0 -> o | m = the whole sparse block (router and experts) |
| scaled residual | h -> h + r a | m0 -> o | a, m scaled by r = config.residual_multiplier |
| sandwich norms | h -> h + a | m0 -> o | a = post_attn_norm(attn(norm(h))), m likewise |
| post-sublayer norm | h -> h + a | m0 -> o | a = post_attn_norm(attn(h)), m likewise |
| residual inside the module | h -> h + a | m0 -> o | a read off attention's last linear, m off the MLP's |
| parallel | h -> h + a | h -> h + m | o = h + a + m, both read h |

The families of each residual form:

- sequential pre-norm: llama, mistral, qwen2, qwen3, olmo, smollm3, phi3, gpt2,
  gpt_neox (use_parallel_residual=False)
- pre-norm, mixture of experts: mixtral, olmoe, qwen2_moe, qwen3_moe
- scaled residual: granite
- sandwich norms: gemma2, gemma3_text
- post-sublayer norm: olmo2, olmo3
- residual inside the module: bloom
- parallel: gpt_neox (Pythia), falcon

m0 = h + a is the residual after attention, read off the input of `mid_site` (the module the model
applies to it first). Block: h -> o. "Without residual": X = the module's own input (the norm's
output; h itself for olmo2) and Y = its raw output a or m; for the block X = h, Y = o - h. Sliding
windows (olmo3, gemma3), NoPE layers (smollm3) and QKV clipping (olmo) live inside the attention
module and need nothing here. Some model types have variants chosen by config flags (VARIANTS:
Pythia's sequential configs, Falcon-40B's two norms, Falcon's sequential form); configs whose
forward leaves the table (BLOOM with apply_residual_connection_post_layernorm) are refused.
`redundancy families` prints the table.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .errors import UnsupportedFamilyError

# The module sites of every decoder layer: the whole block, its attention, its MLP (the cube's
# `module` axis, in this order).
MODULES: tuple[str, ...] = ("block", "attn", "mlp")

__all__ = ["Family", "FAMILIES", "MODULES", "family_for", "table_rows"]


@dataclass(frozen=True, kw_only=True)
class Family:
    """Where the parts of one decoder family live. Paths are attribute paths (dots allowed); every
    field is given by name."""

    model_type: str
    layers: str  # from the *ForCausalLM model to the ModuleList of decoder layers
    attn: str  # attention module, relative to a layer; its input is the "w/o residual" X
    mlp: str
    attn_out: str  # module whose output is what attention adds to the residual
    mlp_out: str
    mid_site: str | None  # module whose input is the residual after attention; None if parallel
    residual: str  # "sequential" or "parallel"
    final_norm: str
    embed: str
    attn_norm: str | None = "input_layernorm"  # norm in front of attention (none in olmo2)
    mlp_norm: str | None = "post_attention_layernorm"  # norm in front of the MLP
    scale: str | None = None  # config attribute r: what joins the residual is r * the module's output
    embed_scale: str | None = None  # config attribute multiplying the embedding output (granite)
    layerwise: str = ""  # why layer-by-layer scoring cannot mirror this trunk ("" when it can)
    # attn / mlp return residual + output (bloom): a dropped one passes the residual
    residual_inside: bool = False
    clone_out: bool = False  # the layer adds into the module's output in place (falcon): capture a copy

    def describe(self) -> str:
        scaled = f" x {self.scale}" if self.scale else ""
        return (f"{self.model_type}: {self.residual} residual, attn adds {self.attn_out}{scaled}, "
                f"mlp adds {self.mlp_out}{scaled}")


_FUSED = "experts fused on load"  # transformers converts the per-expert tensors on disk when loading


# the trunk of the decoders under `model.` (llama and most others)
_MODEL = dict(layers="model.layers", attn="self_attn", mlp="mlp", final_norm="model.norm",
              embed="model.embed_tokens", residual="sequential")


def _pre_norm(model_type: str, **kw: Any) -> Family:
    return Family(model_type=model_type, **_MODEL, attn_out="self_attn", mlp_out="mlp",
                  mid_site="post_attention_layernorm", **kw)


def _sandwich(model_type: str) -> Family:
    return Family(model_type=model_type, **_MODEL, attn_out="post_attention_layernorm",
                  mlp_out="post_feedforward_layernorm", mid_site="pre_feedforward_layernorm",
                  mlp_norm="pre_feedforward_layernorm")


def _post_norm(model_type: str) -> Family:
    return Family(model_type=model_type, **_MODEL, attn_out="post_attention_layernorm",
                  mlp_out="post_feedforward_layernorm", mid_site="mlp", attn_norm=None, mlp_norm=None)


FAMILIES: dict[str, Family] = {f.model_type: f for f in [
    *(_pre_norm(t) for t in ("llama", "mistral", "qwen2", "qwen3", "olmo", "smollm3", "phi3")),
    # mlp: the sparse block
    *(_pre_norm(t, layerwise=_FUSED) for t in ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe")),
    _pre_norm("granite", scale="residual_multiplier", embed_scale="embedding_multiplier"),
    _sandwich("gemma2"), _sandwich("gemma3_text"),
    _post_norm("olmo2"), _post_norm("olmo3"),
    Family(model_type="gpt_neox", layers="gpt_neox.layers", attn="attention", mlp="mlp", attn_out="attention",
           mlp_out="mlp", mid_site=None, residual="parallel", final_norm="gpt_neox.final_layer_norm",
           embed="gpt_neox.embed_in"),
    # BLOOM's attention and MLP add the residual themselves: their contributions are read off the
    # last linear of each (transformers/models/bloom/modeling_bloom.py BloomAttention, BloomMLP)
    Family(model_type="bloom", layers="transformer.h", attn="self_attention", mlp="mlp",
           attn_out="self_attention.dense", mlp_out="mlp.dense_4h_to_h", mid_site="post_attention_layernorm",
           residual="sequential", final_norm="transformer.ln_f", embed="transformer.word_embeddings",
           residual_inside=True, layerwise="ALiBi and the embedding LayerNorm"),
    # Falcon-7B: attention and MLP read one shared norm in parallel; the MLP's output gets the
    # attention's added in place (FalconDecoderLayer.forward: mlp_output += attention_output)
    Family(model_type="falcon", layers="transformer.h", attn="self_attention", mlp="mlp",
           attn_out="self_attention", mlp_out="mlp", mid_site=None, residual="parallel",
           final_norm="transformer.ln_f", embed="transformer.word_embeddings", attn_norm=None, mlp_norm=None,
           clone_out=True, layerwise="rotary or ALiBi built by the model"),
    Family(model_type="gpt2", layers="transformer.h", attn="attn", mlp="mlp", attn_out="attn", mlp_out="mlp",
           mid_site="ln_2", residual="sequential", final_norm="transformer.ln_f", embed="transformer.wte",
           attn_norm="ln_1", mlp_norm="ln_2",
           layerwise="learned positions"),  # added to the embedding before the first layer
]}

# Pythia-style configs with use_parallel_residual=False: the MLP reads h + a through its norm
_SEQUENTIAL_NEOX = replace(FAMILIES["gpt_neox"], mid_site="post_attention_layernorm", residual="sequential")
# config-dependent variants of one model_type: (what the config says, test, entry)
VARIANTS: dict[str, list[tuple[str, Any, Family]]] = {
    "gpt_neox": [("use_parallel_residual=false", lambda c: not getattr(c, "use_parallel_residual", True),
                  _SEQUENTIAL_NEOX)],
    "falcon": [("parallel_attn=false", lambda c: not getattr(c, "parallel_attn", True),
                replace(FAMILIES["falcon"], mid_site="post_attention_layernorm", residual="sequential",
                        attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", clone_out=False)),
               ("new_decoder_architecture (Falcon-40B/180B: a norm each)",
                lambda c: (getattr(c, "new_decoder_architecture", False)
                           and (c.num_ln_in_parallel_attn or 2) == 2),
                replace(FAMILIES["falcon"], attn_norm="ln_attn", mlp_norm="ln_mlp"))],
}
# configs whose forward leaves the table's assumptions: refused with the reason
_REFUSED = {
    "bloom": [("apply_residual_connection_post_layernorm",
               lambda c: c.apply_residual_connection_post_layernorm),
              ("pretraining_tp > 1 with slow_but_exact (the last linears are bypassed)",
               lambda c: c.slow_but_exact and c.pretraining_tp > 1)],
}


def family_for(config: Any) -> Family:
    """The family entry for a transformers config (read from `model_type`, never from a name).
    Raises UnsupportedFamilyError (a model_type the table lacks, with the closest ones)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedFamilyError(
            f"model_type {model_type!r} is not in the family table; supported: "
            f"{', '.join(sorted(FAMILIES))}. To add one, add a Family entry in redundancy/families.py "
            "naming its layers, attention, MLP, the modules whose outputs join the residual, and the "
            "residual form, then add a tiny random model to tests/test_families.py.")
    for what, test in _REFUSED.get(model_type, []):
        if test(config):
            raise UnsupportedFamilyError(f"{model_type} with {what} is not supported: its residual is formed "
                                         "otherwise than the family table says")
    for _, test, family in VARIANTS.get(model_type, []):
        if test(config):
            return family
    return FAMILIES[model_type]


def get_path(root: Any, path: str) -> Any:
    """Follow a dotted attribute path from `root`."""
    for part in path.split("."):
        root = getattr(root, part)
    return root


def table_rows() -> list[dict[str, str]]:
    """The family table for people: model type, residual form, where each module's output joins
    the residual, and whether layer-by-layer scoring supports it."""
    rows = []
    variant_entries = [(f, f" ({what})") for v in VARIANTS.values() for what, _, f in v]
    entries = [(f, "") for f in FAMILIES.values()] + variant_entries
    for f, variant in entries:
        scaled = f" x {f.scale}" if f.scale else ""
        rows.append({"model_type": f.model_type + variant,
                     "residual": f.residual, "attention joins from": f"{f.attn_out}{scaled}",
                     "MLP joins from": f"{f.mlp_out}{scaled}",
                     "layer-by-layer": f.layerwise and f"no ({f.layerwise})" or "yes"})
    return rows
