"""The family table: where a decoder's layers, attention, MLP and norms live, and how its residual is formed.

One table, no per-family modeling code. Every entry names submodules relative to a decoder layer.
For layer l with input h (the residual stream entering it) and output o:

| residual form | families | attn X -> Y | mlp X -> Y | "module output added back" |
|---|---|---|---|---|
| sequential pre-norm | llama, mistral, qwen2, qwen3, gpt_neox (use_parallel_residual=False) | h -> h + a | m0 -> o | a = attn(norm(h)), m = mlp(norm(m0)) |
| sandwich norms | gemma2 | h -> h + a | m0 -> o | a = post_attn_norm(attn(norm(h))), m likewise |
| post-sublayer norm | olmo2 | h -> h + a | m0 -> o | a = post_attn_norm(attn(h)), m likewise |
| parallel | gpt_neox (Pythia) | h -> h + a | h -> h + m | o = h + a + m, both read h |

m0 = h + a is the residual after attention, read off the input of `mid_site` (the module the model
applies to it first). Block: h -> o. "Without residual": X = the module's own input (the norm's
output; h itself for olmo2) and Y = its raw output a or m; for the block X = h, Y = o - h.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .errors import UnsupportedFamilyError

__all__ = ["Family", "FAMILIES", "family_for"]


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

    def describe(self) -> str:
        return f"{self.model_type}: {self.residual} residual, attn adds {self.attn_out}, mlp adds {self.mlp_out}"


def _pre_norm(model_type: str) -> Family:
    return Family(model_type, "model.layers", "self_attn", "mlp", "self_attn", "mlp",
                  "post_attention_layernorm", "sequential", "model.norm", "model.embed_tokens")


FAMILIES: dict[str, Family] = {f.model_type: f for f in [
    _pre_norm("llama"),
    _pre_norm("mistral"),
    _pre_norm("qwen2"),
    _pre_norm("qwen3"),
    Family("gemma2", "model.layers", "self_attn", "mlp", "post_attention_layernorm",
           "post_feedforward_layernorm", "pre_feedforward_layernorm", "sequential", "model.norm",
           "model.embed_tokens", mlp_norm="pre_feedforward_layernorm"),
    Family("olmo2", "model.layers", "self_attn", "mlp", "post_attention_layernorm",
           "post_feedforward_layernorm", "mlp", "sequential", "model.norm", "model.embed_tokens",
           attn_norm=None, mlp_norm=None),
    Family("gpt_neox", "gpt_neox.layers", "attention", "mlp", "attention", "mlp", None, "parallel",
           "gpt_neox.final_layer_norm", "gpt_neox.embed_in"),
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
