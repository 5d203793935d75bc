"""4-bit weights (W4A16) for full or dropped checkpoints: AWQ or GPTQ through llmcompressor.

The output is a compressed-tensors checkpoint that reloads with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` like any other, on CPU too.
AWQ smooths each norm -> projection pair; a layer whose attention or MLP was dropped has no such
pair any more, so its mappings are resolved here layer by layer and only kept where every module
still exists (llmcompressor's regex mappings would match across layers and fail).
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .._atomic import atomic_dir, check_output
from .._config import check_text_only
from .._registry import Registry
from ..errors import RedundancyError
from ..families import family_for

# llmcompressor's AWQ registry has no entry for these; the pairs are the same as its OLMo and
# default ones. GPT-NeoX: only norm -> first projection (its MLP has GELU between the projections).
_EXTRA_AWQ = {
    "Olmo2ForCausalLM": [("re:.*v_proj$", ["re:.*o_proj$"]), ("re:.*up_proj$", ["re:.*down_proj$"])],
    "GPTNeoXForCausalLM": [("re:.*input_layernorm$", ["re:.*query_key_value$"]),
                           ("re:.*post_attention_layernorm$", ["re:.*dense_h_to_4h$"])],
}


def check_group_size(model: nn.Module, group_size: int) -> None:
    """Every quantized Linear's input width must be a multiple of the group size."""
    if group_size < 1:
        raise RedundancyError(f"--group-size {group_size}: give a positive number of weights per scale "
                              "(e.g. 128)")
    bad = [(n, m.in_features) for n, m in model.named_modules()
           if isinstance(m, nn.Linear) and not n.endswith("lm_head") and m.in_features % group_size]
    bad += [(n, p.shape[-1]) for n, p in model.named_parameters()  # fused experts: (E, out, in)
            if ".experts." in n and p.dim() == 3 and p.shape[-1] % group_size]
    if bad:
        raise RedundancyError(f"{bad[0][0]} has input width {bad[0][1]}, not a multiple of the group size "
                              f"{group_size}; pass a group size that divides every layer width (e.g. 32)")


def _check_not_fused_experts(model: nn.Module) -> None:
    """transformers fuses a mixture of experts' per-expert weights on load; their 4-bit form does not
    convert back (seen with llmcompressor 0.14 and transformers 5.17), so it would not reload."""
    fused = next((n for n, p in model.named_parameters() if ".experts." in n and p.dim() == 3), None)
    if fused is not None:
        raise RedundancyError(f"{type(model).__name__} is a mixture of experts ({fused}): its 4-bit "
                              "checkpoint would not reload (transformers fuses experts on load); "
                              "quantize a dense model")


def awq_mappings(model: nn.Module) -> list:
    """AWQ mappings with exact module names, one per layer and pair, for the modules still present."""
    from compressed_tensors.utils import match_name  # how llmcompressor itself reads "re:" targets
    from llmcompressor.modifiers.transform.awq import AWQMapping, get_layer_mappings_from_model

    arch = type(model).__name__
    pairs = _EXTRA_AWQ.get(arch) or [(m.smooth_layer, m.balance_layers)
                                     for m in get_layer_mappings_from_model(model)]
    check_text_only(model.config)  # AWQ's pairs are found under the family table's layers
    layers_path = family_for(model.config).layers
    modules = dict(model.named_modules())
    out = []
    for i in range(len(model.get_submodule(layers_path))):
        names = [n for n in modules if n.startswith(f"{layers_path}.{i}.")]
        for smooth, balance in pairs:
            s = [n for n in names if match_name(n, smooth)]
            b = [[n for n in names if match_name(n, t)] for t in balance]
            if len(s) == 1 and all(b) and _has_weight(modules[s[0]]):
                out.append(AWQMapping(s[0], [n for group in b for n in group]))
    if not out:
        raise RedundancyError(f"AWQ has no smoothing pairs for {arch}; quantize it with --method gptq")
    return out


def _has_weight(module: nn.Module) -> bool:
    """A dropped module's norm is an Identity: nothing to fold the AWQ scales into."""
    return isinstance(getattr(module, "weight", None), torch.Tensor)


@dataclass(frozen=True)
class Quantizer:
    """One W4A16 method: whether its 4-bit grid is symmetric, and `modifiers(model, groups, n_grid)`,
    the llmcompressor modifiers that quantize `model` with the weight scheme `groups`."""

    description: str
    symmetric: bool
    modifiers: Callable[[nn.Module, dict[str, Any], int], list]


def _gptq(model: nn.Module, groups: dict[str, Any], n_grid: int) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier
    return [GPTQModifier(config_groups=groups, ignore=["lm_head"])]


def _awq(model: nn.Module, groups: dict[str, Any], n_grid: int) -> list:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    return [AWQModifier(mappings=awq_mappings(model), n_grid=n_grid),
            QuantizationModifier(config_groups=groups, ignore=["lm_head"])]


# The quantization methods (the CLI's --quant / --method choices).
QUANTIZERS: Registry[Quantizer] = Registry("quantization method")
QUANTIZERS.register("awq", Quantizer("AWQ: activation-aware scales per norm -> projection pair, then "
                                     "round to nearest (asymmetric)", False, _awq))
QUANTIZERS.register("gptq", Quantizer("GPTQ: second-order error compensation (symmetric)", True, _gptq))
METHODS = tuple(QUANTIZERS.names())  # the registry's names, for callers that want a tuple


def recipe(model: nn.Module, method: str, group_size: int, n_grid: int = 20) -> list:
    """The llmcompressor modifiers for W4A16 with `group_size` weights per scale, for QUANTIZERS'
    `method`. Raises NotFoundError for an unknown method (with the closest name)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    how = QUANTIZERS.get(method)
    weights = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=group_size,
                               symmetric=how.symmetric)
    return how.modifiers(model, {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}, n_grid)


@contextmanager
def _quiet_cpu_safe(verbose: bool) -> Iterator[None]:
    """llmcompressor pins cached activations for fast H2D copies; pinning needs a GPU, so it is
    skipped without one. Its per-module log lines are off unless verbose (its progress bars stay)."""
    from llmcompressor.pipelines.cache import IntermediatesCache
    from loguru import logger

    original = IntermediatesCache.pin_memory
    if not torch.cuda.is_available():
        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    if not verbose:
        logger.disable("llmcompressor")
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original
        logger.enable("llmcompressor")


def quantize(src: str | Path, out: str | Path, *, method: str = "awq", group_size: int = 128,
             calibration: str = "prose", n_samples: int = 64, seq_len: int = 128, seed: int = 0,
             n_grid: int = 20, verbose: bool = False, overwrite: bool = False) -> Path:
    """Quantize checkpoint `src` (dropped or not) to 4-bit weights and save it to `out`.

    Calibration: `n_samples` packed windows of `seq_len` tokens of a calibration set (as scoring).
    `n_grid`: AWQ's grid of scale exponents per mapping (fewer is faster and coarser).
    `out` is written under a temporary name and renamed when complete; it may not be, contain or sit
    inside `src`, and an existing non-empty `out` is replaced only with `overwrite`.
    """
    from datasets import Dataset
    from llmcompressor import oneshot

    from .._load import load_tokenizer
    from ..calibration import calibration_tokens
    from ..drop import load_any
    from ..drop._materialize import save_dropped

    src, out = Path(src), check_output(out, [src], overwrite, kind="quantized")
    model, tokenizer = load_any(src), load_tokenizer(src)
    check_group_size(model, group_size)
    _check_not_fused_experts(model)
    # (n, seq_len)
    ids = calibration_tokens(calibration, tokenizer, n=n_samples, seq_len=seq_len, seed=seed).tokens
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    dropped = bool(getattr(model.config, "drop_sites", None))
    with _quiet_cpu_safe(verbose), _stock_view(model, tokenizer, dropped):
        oneshot(model=model, dataset=data, recipe=recipe(model, method, group_size, n_grid),
                max_seq_length=seq_len, num_calibration_samples=n_samples)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            if dropped:  # the dropped format again: its own model_type, modeling file, README
                save_dropped(model, tmp, save_compressed=True)
            else:
                model.save_pretrained(tmp, save_compressed=True)
            tokenizer.save_pretrained(tmp)
            if (src / "checkpoint.json").exists():
                shutil.copy(src / "checkpoint.json", tmp / "checkpoint.json")
    return out


@contextmanager
def _stock_view(model: nn.Module, tokenizer, dropped: bool) -> Iterator[None]:
    """llmcompressor reads config.json (AutoConfig, no remote code) and the tokenizer from
    `model.config._name_or_path`, in `oneshot` and again when saving (llmcompressor
    entrypoints/oneshot.py validate_model, compressed_tensors_utils.py resave_config). A dropped
    folder's config names no stock family, so they read a folder that holds the family's own config
    (drop lists included) and the tokenizer, kept until the model is saved."""
    if not dropped:
        yield
        return
    import tempfile

    before = model.config._name_or_path
    with tempfile.TemporaryDirectory(prefix="redundancy-stock-") as view:
        model.config.save_pretrained(view)
        tokenizer.save_pretrained(view)
        model.config._name_or_path = view
        try:
            yield
        finally:
            model.config._name_or_path = before
