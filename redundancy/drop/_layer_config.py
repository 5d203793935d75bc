"""Config fields that describe layers, and how each is remapped when whole blocks are removed.

A block drop is saved as the stock architecture with fewer layers. Every config field that says
something about layer i must then say it about the kept layer's new index, or the reloaded model
is another model (SmolLM3 keeps an 8-entry `no_rope_layers` after a Block-2 drop: every layer past
the first dropped one takes the wrong RoPE choice).

The fields, read from transformers 5.17's configuration and modeling files of every family in the
table (`transformers/models/<family>/configuration_<family>.py`, `modeling_<family>.py`):

- `layer_types` (qwen2, qwen3, qwen2_moe, smollm3, gemma2, gemma3_text, olmo3; any config may hold
  it): one entry per layer, read as `config.layer_types[layer_idx]` by the decoder layer and the
  mask builder.
- `no_rope_layers` (smollm3): one entry per layer, 1 = RoPE (`SmolLM3Attention.__init__`).
- `mlp_only_layers` (qwen2_moe, qwen3_moe): layer indices with a dense MLP
  (`Qwen2MoeDecoderLayer.__init__`).
- `decoder_sparse_step` (qwen2_moe, qwen3_moe): period, sparse where
  `(layer_idx + 1) % decoder_sparse_step == 0`.
- `max_window_layers` (qwen2, qwen3, qwen2_moe): threshold that builds `layer_types`
  (`i >= max_window_layers`; qwen2_moe `i <`).
- `first_k_dense_replace` (deepseek-style configs): threshold, dense where `layer_idx < k`.
- `no_rope_layer_interval` (smollm3), `sliding_window_pattern` / `_sliding_window_pattern`
  (gemma3_text): periods that only build `no_rope_layers` / `layer_types` when those are absent
  (`SmolLM3Config.__post_init__`, `Gemma3TextConfig.__post_init__`).
- `per_layer_config` (any config: transformers' heterogeneous configs,
  `integrations/heterogeneity/configuration_utils.py`): {layer index: overrides}.
- `scale_attn_by_inverse_layer_idx` (gpt2; the Stanford CRFM runs set it): attention scaled by
  1 / (layer_idx + 1) (`GPT2Attention.__init__`).

Remapping: an entry per layer keeps the kept layers' entries; indices and `per_layer_config` keys
move to the new positions; a threshold becomes the number of kept layers below it; a period is
made explicit (`decoder_sparse_step` -> `mlp_only_layers` with step 1) or removed once the list it
builds is explicit. `scale_attn_by_inverse_layer_idx` cannot follow a layer to a new index: those
block drops are saved in the dropped format, every layer at its index. Any other field that looks
like it describes layers (a name about layers, a list as long as the layer count) is refused,
naming the field, before anything is written.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from ..errors import DropError

Remap = Callable[[Any, list[int], dict[str, Any]], Any]


def _per_layer(value, keep, config):
    return None if value is None else [value[i] for i in keep]


def _indices(value, keep, config):
    new = {old: i for i, old in enumerate(keep)}
    return None if value is None else [new[i] for i in value if i in new]


def _threshold(value, keep, config):
    return None if value is None else sum(1 for i in keep if i < value)


def _per_layer_config(value, keep, config):
    new = {old: i for i, old in enumerate(keep)}
    if not value:
        return value
    width = len(str(len(keep) - 1))  # transformers zero-pads the keys so they sort
    return {str(new[int(k)]).zfill(width): v for k, v in value.items() if int(k) in new}


# field -> remap; None: removed (a period that only builds a list the config already holds)
REMAP: dict[str, Remap | None] = {
    "layer_types": _per_layer,
    "no_rope_layers": _per_layer,
    "mlp_only_layers": _indices,
    "max_window_layers": _threshold,
    "first_k_dense_replace": _threshold,
    "per_layer_config": _per_layer_config,
    "no_rope_layer_interval": None,
    "sliding_window_pattern": None,
    "_sliding_window_pattern": None,
}
# fields whose effect depends on a layer's index and no config can move (true -> dropped format)
INDEX_BOUND = ("scale_attn_by_inverse_layer_idx",)
# fields named after layers that say nothing per layer
NOT_PER_LAYER = {"num_hidden_layers", "n_layer", "num_layers", "decoder_sparse_step",
                 "apply_residual_connection_post_layernorm", *INDEX_BOUND}
# lists that can be as long as the layer count by chance
NOT_LAYER_LISTS = {"eos_token_id", "bos_token_id", "pad_token_id", "architectures", "drop_attn_list",
                   "drop_mlp_list", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens"}
_LAYERISH = re.compile(r"layer|_step$|_pattern$|_interval$|every|_freq|_period|_replace$|_idxs?$|_indices$")
_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def layer_count(config: dict[str, Any]) -> int:
    """Decoder layers of a config dict (`num_hidden_layers`, or gpt2 / bloom's `n_layer`)."""
    for key in _COUNT_KEYS:
        if isinstance(config.get(key), int):
            return config[key]
    raise DropError("config.json gives no layer count (num_hidden_layers or n_layer)")


def unknown_layer_fields(config: dict[str, Any]) -> list[str]:
    """Fields of `config` that look like they describe layers and have no remap rule."""
    n = layer_count(config)
    found = []
    for key, value in config.items():
        if key in REMAP or key in NOT_PER_LAYER or key in NOT_LAYER_LISTS or "norm" in key:
            continue
        as_long = isinstance(value, (list, tuple)) and len(value) == n
        if _LAYERISH.search(key) or as_long:
            found.append(key)
    return found


def index_bound(config: dict[str, Any]) -> list[str]:
    """Fields set in `config` whose effect follows a layer's index (no stock checkpoint can keep it)."""
    return [k for k in INDEX_BOUND if config.get(k)]


def check_layer_fields(config: dict[str, Any]) -> None:
    """Refuse a config holding a per-layer field this module cannot remap.

    Raises:
        DropError: naming the field, before any weight is read or written.
    """
    unknown = unknown_layer_fields(config)
    if unknown:
        raise DropError(
            f"config.json field {unknown[0]!r} (value {config[unknown[0]]!r}) looks like it describes "
            "layers, and a block drop does not know how to remap it: the saved model could load as "
            "another model. Add its rule to redundancy/drop/_layer_config.py (REMAP or NOT_PER_LAYER)")


def remap_for_blocks(config: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """`config` (a config.json dict) for the model that keeps only the layers `keep` (sorted).

    Raises:
        DropError: a per-layer field without a rule (see `check_layer_fields`).
    """
    check_layer_fields(config)
    out = dict(config)
    step = out.get("decoder_sparse_step")
    if step and step > 1:  # sparse where (i + 1) % step == 0: make the dense layers explicit
        dense = set(out.get("mlp_only_layers") or []) | {i for i in range(layer_count(config))
                                                         if (i + 1) % step}
        out["mlp_only_layers"], out["decoder_sparse_step"] = sorted(dense), 1
    for key, remap in REMAP.items():
        if key in out:
            if remap is None:
                del out[key]
            else:
                out[key] = remap(out[key], keep, out)
    for key in _COUNT_KEYS:
        if isinstance(out.get(key), int):
            out[key] = len(keep)
    return out
