"""Readers for the config fields the toolkit uses, in every form the hub serves them.

A field may sit under another name (gpt2's n_positions, n_embd; falcon's num_kv_heads), under an
older name (torch_dtype before transformers 5's dtype; rope_theta before rope_parameters), inside
a multimodal wrapper's text_config (gemma3, llava, mistral3), or in another file (eos and pad ids
in generation_config.json or the tokenizer). An eos id may be one id or a list (Llama-3), a pad id
may be absent. Every reader takes a transformers config object or a config.json read raw (dict),
and reads the text model's part (`text_config`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import RedundancyError, SeriesError, UnsupportedFamilyError, one_line

Config = Any  # a transformers PreTrainedConfig, or a config.json as a dict


def _get(config: Config, name: str) -> Any:
    if isinstance(config, dict):
        return config.get(name)
    return getattr(config, name, None)


def _first(config: Config, *names: str) -> Any:
    """The value of the first of `names` the config holds (not None)."""
    return next((v for v in (_get(config, n) for n in names) if v is not None), None)


def read_config(path: str | Path) -> dict:
    """A checkpoint folder's config.json as a dict. Raises SeriesError if it is missing or not JSON."""
    file = Path(path) / "config.json"
    try:
        raw = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise SeriesError(f"cannot read {file}: {one_line(exc)}; pass a Hugging Face checkpoint "
                          "folder with a valid config.json") from None
    if not isinstance(raw, dict):
        raise SeriesError(f"{file} holds no JSON object; pass a Hugging Face checkpoint folder")
    return raw


_NESTED = ("text_config", "decoder", "generator")  # where transformers nests a text model's config


def text_config(config: Config) -> Config:
    """The part of `config` describing the text model: the config itself for a text-only model.

    transformers nests it as `text_config` in multimodal wrappers (Gemma3Config, LlavaConfig,
    Mistral3Config), or `decoder` / `generator`; PreTrainedConfig.get_text_config(decoder=True)
    (transformers/configuration_utils.py) returns it. A dict (config.json read raw): that entry.
    Raises RedundancyError when the config holds several (get_text_config's ambiguity).
    """
    if isinstance(config, dict):
        inner = next((config[k] for k in _NESTED if isinstance(config.get(k), dict)), None)
        return config if inner is None else inner
    get = getattr(config, "get_text_config", None)
    # without a nested config, get_text_config(decoder=True) would return a pruned copy of an
    # encoder-decoder config (T5): not a wrapper, so the config itself
    if get is None or all(_get(config, k) is None for k in _NESTED):
        return config
    try:
        return get(decoder=True)
    except ValueError as exc:  # several text configs: which one generates is not ours to guess
        raise RedundancyError(f"{one_line(exc)}; pass a checkpoint of the text model alone") from None


def check_text_only(config: Config, label: str = "") -> None:
    """Refuse a multimodal wrapper where the family table is used (scoring, dropping, quantizing).

    The table gives module paths of a text-only causal LM (model.layers...); a wrapper's text model
    sits elsewhere (model.language_model...) and its fields under text_config, so it is refused in
    one line rather than failing on a missing attribute. Raises UnsupportedFamilyError.
    """
    inner = text_config(config)
    if inner is config:
        return
    outer_type, inner_type = _get(config, "model_type"), _get(inner, "model_type")
    where = f"{label}: " if label else ""
    raise UnsupportedFamilyError(
        f"{where}model_type {outer_type!r} is a multimodal wrapper: its text model's fields live under "
        f"text_config (model_type {inner_type!r}), which scoring, dropping and quantizing do not read "
        f"through; save the text model as a checkpoint of its own (model_type {inner_type}) and pass that")


def check_folder_text_only(path: str | Path, label: str = "") -> None:
    """check_text_only on a checkpoint folder's config.json, before its weights are read. A missing
    or unreadable config.json passes: the loader reports it in its own words."""
    try:
        raw = read_config(path)
    except SeriesError:
        return
    check_text_only(raw, label or str(path))


def token_ids(value: Any, field: str = "token id") -> tuple[int, ...]:
    """One id, a list of ids (Llama-3's eos) or None -> a tuple of ids (empty for None).

    Negative ids (some hub configs hold pad_token_id = -1 for "none") count as none. Raises
    RedundancyError for anything else (a string, a float), naming the field.
    """
    if value is None:
        return ()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise RedundancyError(f"{field} is {value!r}: neither a token id nor a list of token ids; fix it "
                              "in config.json or generation_config.json")
    return tuple(v for v in values if v >= 0)


def eos_ids(config: Config, generation_config: Any = None, tokenizer: Any = None) -> tuple[int, ...]:
    """Every end-of-sequence id the model may stop on, without repeats, in this order: the
    generation config's (what generate() stops on), the config's, the tokenizer's.

    transformers keeps `eos_token_id` (an id or a list) in GenerationConfig
    (transformers/generation/configuration_utils.py, read from generation_config.json, else copied
    from the model config by GenerationConfig.from_model_config) and in the text model's config
    (e.g. LlamaConfig.eos_token_id: int | list[int] | None); a tokenizer has one eos_token.
    Raises RedundancyError for an id that is not an int or a list of ints.
    """
    found: list[int] = []
    for source, value in (("generation_config.json", _get(generation_config, "eos_token_id")),
                          ("config.json", _get(text_config(config), "eos_token_id")),
                          ("the tokenizer", getattr(tokenizer, "eos_token_id", None))):
        found += [i for i in token_ids(value, f"eos_token_id in {source}") if i not in found]
    return tuple(found)


def pad_id(config: Config, generation_config: Any = None, tokenizer: Any = None) -> int:
    """One padding id for generate(): the first pad_token_id of the generation config, the config,
    the tokenizer; else the first eos id; else 0.

    Why that fallback: generate() itself pads with eos_token_id[0] when no pad is set
    (GenerationMixin._prepare_special_tokens, transformers/generation/utils.py), and a pad is only
    written into rows that finished early, so any id in the vocabulary (0) serves when there is no
    eos either. pad_token_id lives in GenerationConfig and in the text config (None when absent,
    as in Llama-3); a list there is read as its first id. Raises RedundancyError as token_ids.
    """
    for source, value in (("generation_config.json", _get(generation_config, "pad_token_id")),
                          ("config.json", _get(text_config(config), "pad_token_id")),
                          ("the tokenizer", getattr(tokenizer, "pad_token_id", None))):
        if ids := token_ids(value, f"pad_token_id in {source}"):
            return ids[0]
    eos = eos_ids(config, generation_config, tokenizer)
    return eos[0] if eos else 0


def vocab_size(config: Config) -> int | None:
    """The text model's vocabulary size. transformers keeps it on the text config only: a
    multimodal wrapper (Gemma3Config) has no `vocab_size` of its own."""
    return _get(text_config(config), "vocab_size")


def max_positions(config: Config) -> int | None:
    """The context the model was built for, or None if the config names none.

    Read as max_position_embeddings (most families), n_positions (gpt2, gpt_bigcode), n_ctx (older
    gpt2 configs), seq_length (ChatGLM, Qwen-1, Megatron exports), on the text config. A config
    object maps n_positions to max_position_embeddings through its attribute_map
    (transformers/configuration_utils.py); a raw config.json does not, hence all the names.
    """
    value = _first(text_config(config), "max_position_embeddings", "n_positions", "n_ctx", "seq_length")
    return int(value) if value is not None else None


def rope_parameters(config: Config) -> dict | None:
    """The rotary settings as one dict with `rope_theta`, or None if the config names none.

    transformers 5 keeps them in `rope_parameters` (rope_theta included; `rope_scaling` is its
    alias, transformers/configuration_utils.py); older config.json files hold `rope_theta` at the
    top with an optional `rope_scaling` dict, GPT-NeoX-style ones `rotary_emb_base` / `rotary_pct`,
    GPT-J-style ones `rotary_dim` (an empty dict: rotary, default settings). All are read; the dict
    form wins where both are given.
    """
    c = text_config(config)
    params = _first(c, "rope_parameters", "rope_scaling")
    theta = _first(c, "rope_theta", "rotary_emb_base")
    rotary = (_first(c, "rotary_pct", "rotary_dim") is not None
              or _get(c, "position_embedding_type") == "rotary")
    if not isinstance(params, dict) and theta is None and not rotary:
        return None
    out = dict(params) if isinstance(params, dict) else {}
    if theta is not None:
        out.setdefault("rope_theta", float(theta))
    return out


# ALiBi models have no position table and no rotary settings in their config (bloom, mpt)
_ALIBI_TYPES = ("bloom", "mpt")


def position_limit(config: Config) -> int | None:
    """The longest sequence the model can run at all, or None when positions are computed.

    Rotary (rope_parameters) and ALiBi models compute every position, so they run past their
    context (with whatever quality); a model with neither has a learned table of max_positions
    rows (gpt2's wpe of n_positions rows), and a longer sequence is an IndexError mid-run.
    Give it a config object: transformers fills rope_parameters for every rotary family, where an
    old config.json may name no rotary field at all (LLaMA-1's) and read raw would look learned.
    """
    c = text_config(config)
    if rope_parameters(c) is not None or _get(c, "alibi") or _get(c, "model_type") in _ALIBI_TYPES:
        return None
    return max_positions(c)


def torch_dtype(config: Config) -> Any:
    """The dtype the weights are stored in (a torch.dtype), or None if the config names none.

    transformers 5 renamed the field `torch_dtype` to `dtype` (PreTrainedConfig.__post_init__,
    transformers/configuration_utils.py, reads either and keeps `dtype`, a torch.dtype); older
    config.json files hold `torch_dtype` as a string. Raises RedundancyError for a name torch lacks.
    """
    import torch

    # the outer config first: from_pretrained reads a wrapper's dtype there. On config objects
    # torch_dtype is only a deprecated alias of dtype (and warns when read)
    names = ("dtype", "torch_dtype") if isinstance(config, dict) else ("dtype",)
    value = _first(config, *names) or _first(text_config(config), *names)
    if value is None or isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise RedundancyError(f"config dtype {value!r} is not a torch dtype; fix dtype (or torch_dtype) "
                              "in config.json, e.g. \"bfloat16\"")
    return dtype


def hidden_size(config: Config) -> int | None:
    """The residual width: hidden_size, or n_embd (gpt2), d_model (mpt) in a raw config.json;
    config objects map these through their attribute_map."""
    return _first(text_config(config), "hidden_size", "n_embd", "d_model")


def kv_heads(config: Config) -> int | None:
    """Key/value heads: num_key_value_heads, num_kv_heads (falcon), 1 for falcon's multi_query
    without new_decoder_architecture, else the attention heads (no grouped-query attention)."""
    c = text_config(config)
    if _get(c, "multi_query") and not _get(c, "new_decoder_architecture"):
        return 1
    return _first(c, "num_key_value_heads", "num_kv_heads", "num_attention_heads", "n_head")
