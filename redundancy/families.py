"""The family table: where a decoder's layers, attention, MLP and norms live, and how its residual is formed.

One table, no per-family modeling code. Every entry names submodules relative to a decoder layer.
For layer l with input h (the residual stream entering it) and output o:

| residual form | families | attn X -> Y | mlp X -> Y | "module output added back" |
|---|---|---|---|---|
| sequential pre-norm | llama, mistral, qwen2, qwen3, olmo, smollm3, phi3, gpt2, gpt_neox (use_parallel_residual=False) | h -> h + a | m0 -> o | a = attn(norm(h)), m = mlp(norm(m0)) |
| pre-norm, mixture of experts | mixtral, olmoe, qwen2_moe, qwen3_moe | h -> h + a | m0 -> o | m = the whole sparse block (router and experts) |
| scaled residual | granite | h -> h + r a | m0 -> o | a, m scaled by r = config.residual_multiplier |
| sandwich norms | gemma2, gemma3_text | h -> h + a | m0 -> o | a = post_attn_norm(attn(norm(h))), m likewise |
| post-sublayer norm | olmo2, olmo3 | h -> h + a | m0 -> o | a = post_attn_norm(attn(h)), m likewise |
| parallel | gpt_neox (Pythia) | h -> h + a | h -> h + m | o = h + a + m, both read h |

m0 = h + a is the residual after attention, read off the input of `mid_site` (the module the model
applies to it first). Block: h -> o. "Without residual": X = the module's own input (the norm's
output; h itself for olmo2) and Y = its raw output a or m; for the block X = h, Y = o - h. Sliding
windows (olmo3, gemma3), NoPE layers (smollm3) and QKV clipping (olmo) live inside the attention
module and need nothing here. `redundancy families` prints the table.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .errors import UnsupportedFamilyError

__all__ = ["Family", "FAMILIES", "family_for", "table_rows"]


@dataclass(frozen=True)
class Family:
    """Where the parts of one decoder family live. Paths are attribute paths (dots allowed)."""

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

    def describe(self) -> str:
        scaled = f" x {self.scale}" if self.scale else ""
        return (f"{self.model_type}: {self.residual} residual, attn adds {self.attn_out}{scaled}, "
                f"mlp adds {self.mlp_out}{scaled}")


_FUSED = "experts fused on load"  # transformers converts the per-expert tensors on disk when loading


def _pre_norm(model_type: str, **kw: Any) -> Family:
    return Family(model_type, "model.layers", "self_attn", "mlp", "self_attn", "mlp",
                  "post_attention_layernorm", "sequential", "model.norm", "model.embed_tokens", **kw)


def _sandwich(model_type: str) -> Family:
    return Family(model_type, "model.layers", "self_attn", "mlp", "post_attention_layernorm",
                  "post_feedforward_layernorm", "pre_feedforward_layernorm", "sequential", "model.norm",
                  "model.embed_tokens", mlp_norm="pre_feedforward_layernorm")


def _post_norm(model_type: str) -> Family:
    return Family(model_type, "model.layers", "self_attn", "mlp", "post_attention_layernorm",
                  "post_feedforward_layernorm", "mlp", "sequential", "model.norm", "model.embed_tokens",
                  attn_norm=None, mlp_norm=None)


FAMILIES: dict[str, Family] = {f.model_type: f for f in [
    *(_pre_norm(t) for t in ("llama", "mistral", "qwen2", "qwen3", "olmo", "smollm3", "phi3")),
    *(_pre_norm(t, layerwise=_FUSED) for t in ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe")),  # mlp: the sparse block
    _pre_norm("granite", scale="residual_multiplier", embed_scale="embedding_multiplier"),
    _sandwich("gemma2"), _sandwich("gemma3_text"),
    _post_norm("olmo2"), _post_norm("olmo3"),
    Family("gpt_neox", "gpt_neox.layers", "attention", "mlp", "attention", "mlp", None, "parallel",
           "gpt_neox.final_layer_norm", "gpt_neox.embed_in"),
    Family("gpt2", "transformer.h", "attn", "mlp", "attn", "mlp", "ln_2", "sequential", "transformer.ln_f",
           "transformer.wte", attn_norm="ln_1", mlp_norm="ln_2",
           layerwise="learned positions"),  # added to the embedding before the first layer
]}

# Pythia-style configs with use_parallel_residual=False: the MLP reads h + a through its norm
_SEQUENTIAL_NEOX = replace(FAMILIES["gpt_neox"], mid_site="post_attention_layernorm", residual="sequential")


def family_for(config: Any) -> Family:
    """The family entry for a transformers config (read from `model_type`, never from a name)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedFamilyError(
            f"model_type {model_type!r} is not in the family table; supported: "
            f"{', '.join(sorted(FAMILIES))}. To add one, add a Family entry in redundancy/families.py "
            "naming its layers, attention, MLP, the modules whose outputs join the residual, and the "
            "residual form, then add a tiny random model to tests/test_families.py.")
    if model_type == "gpt_neox" and not getattr(config, "use_parallel_residual", True):
        return _SEQUENTIAL_NEOX
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
    for f in [*FAMILIES.values(), _SEQUENTIAL_NEOX]:
        scaled = f" x {f.scale}" if f.scale else ""
        rows.append({"model_type": f.model_type + (" (use_parallel_residual=false)" if f is _SEQUENTIAL_NEOX else ""),
                     "residual": f.residual, "attention joins from": f"{f.attn_out}{scaled}",
                     "MLP joins from": f"{f.mlp_out}{scaled}", "layer-by-layer": f.layerwise and f"no ({f.layerwise})" or "yes"})
    return rows
