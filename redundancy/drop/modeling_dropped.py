"""One modeling file for dropped checkpoints of every family: copied next to config.json.

config.json says `"model_type": "redundancy_dropped"` (so no loader builds the stock family with
the dropped modules initialised at random), `stock_model_type` (the family's own type),
`drop_attn_list`, `drop_mlp_list` (the keys of the study's released checkpoints), `drop_sites`
(where layers, attention, MLP and their norms live) and `auto_map` pointing here. Loading builds
the stock model of `stock_model_type` and replaces each dropped module, and its norms, by a stub
that adds zero to the residual and holds no weights; a dropped attention never writes to the KV
cache, so it allocates none. Self-contained: it imports only torch and transformers.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig

# keys of config.json that belong to the dropped format, not to the stock family's config
_FORMAT_KEYS = ("model_type", "stock_model_type", "auto_map", "architectures", "transformers_version")


class DroppedConfig(PreTrainedConfig):
    """What `AutoConfig.from_pretrained(dir, trust_remote_code=True)` returns for a dropped folder:
    the stock config's fields, kept as they are; `stock_config` turns it into the family's config."""

    model_type = "redundancy_dropped"


class DroppedAttention(nn.Module):
    """Adds nothing to the residual; returns (zeros, no attention weights); keeps no KV cache.
    With `residual_inside` (BLOOM: the module returns residual + output) it returns the residual."""

    def __init__(self, residual_inside: bool = False) -> None:
        super().__init__()
        self.residual_inside = residual_inside

    def forward(self, hidden_states=None, *args, **kwargs):
        if self.residual_inside:  # BloomAttention(hidden_states, residual, ...)
            return (args[0] if args else kwargs["residual"]), None
        x = hidden_states if hidden_states is not None else args[0]
        return torch.zeros_like(x), None


class DroppedMLP(nn.Module):
    """Adds nothing to the residual (returns zeros, or the residual for BloomMLP(x, residual))."""

    def __init__(self, residual_inside: bool = False) -> None:
        super().__init__()
        self.residual_inside = residual_inside

    def forward(self, x, *args, **kwargs):
        if self.residual_inside:
            return args[0] if args else kwargs["residual"]
        return torch.zeros_like(x)


def _as_indices(value, n_layers: int) -> list[int]:
    """Indices from a list of ints or a boolean mask of length n_layers (both formats exist)."""
    value = list(value or [])
    if value and all(isinstance(v, bool) for v in value):
        return [i for i, v in enumerate(value) if v]
    return sorted(int(v) for v in value)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, name = path.split(".")
    for p in parents:
        root = getattr(root, p)
    setattr(root, name, module)


def apply_drops(model: nn.Module, config) -> nn.Module:
    """Replace the dropped modules of `model` in place, as `config` says."""
    sites = config.drop_sites
    layers = model.get_submodule(sites["layers"])
    n = len(layers)
    for kind, stub in (("attn", DroppedAttention), ("mlp", DroppedMLP)):
        for i in _as_indices(getattr(config, f"drop_{kind}_list", None), n):
            layer = layers[i]
            _set(layer, sites[kind], stub(bool(sites.get("residual_inside"))))
            for norm in {sites.get(f"{kind}_norm"), sites.get(f"{kind}_out")} - {None, sites[kind]}:
                _set(layer, norm, nn.Identity())  # the dropped module's norms go with it
    return model


def stock_config(raw):
    """The family's own config from a dropped config.json dict (or a DroppedConfig): our format
    names it in `stock_model_type`, the study's released format in `model_type`."""
    from transformers import AutoConfig

    raw = dict(raw if isinstance(raw, dict) else raw.to_dict())
    model_type = raw.get("stock_model_type") or raw["model_type"]
    for key in _FORMAT_KEYS:
        raw.pop(key, None)
    return AutoConfig.for_model(model_type, **raw)


def stock_class(config):
    """The family's own *ForCausalLM class, by model_type (never the class registered for remote code)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type])


def load_stock(path, config, *args, **kwargs) -> nn.Module:
    """The stock model with the drops applied. The dropped modules' weights are absent from the
    files; transformers' report of them is silenced, and any other missing weight is an error."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = stock_class(config).from_pretrained(path, *args, config=config,
                                                          output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(before)
    model = apply_drops(model, config) if getattr(config, "drop_sites", None) else model
    kept = set(model.state_dict())
    lost = [k for k in info["missing_keys"] if k in kept]
    if lost:
        raise OSError(f"{path} lacks weights of modules that are not dropped: {lost[:3]}")
    return model


class DroppedForCausalLM:
    """`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` lands here."""

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModelForCausalLM"):
        """transformers calls this after loading remote code; nothing to register."""

    @classmethod
    def from_pretrained(cls, path, *args, config=None, **kwargs):
        kwargs.pop("trust_remote_code", None)
        for unused in ("gguf_file", "quantization_config", "subfolder"):  # lm-eval passes None
            if kwargs.get(unused) in (None, ""):
                kwargs.pop(unused, None)
        if config is None:
            config = DroppedConfig.from_pretrained(path)  # a folder or a hub id
        if isinstance(config, DroppedConfig):
            config = stock_config(config)
        # the stock class initialises the absent (dropped) weights; they are replaced right after
        return load_stock(path, config, *args, **kwargs)
