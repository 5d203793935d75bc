"""Generation speed and memory, as in the study: prefill P tokens, then generate G with the KV cache."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .._config import eos_ids, pad_id, vocab_size
from ..errors import RedundancyError


@dataclass
class SpeedResult:
    """One model's timing. tokens_per_s counts prompt and generated tokens, as the study does."""

    prompt_tokens: int
    new_tokens: int
    batch: int
    seconds: float  # median over repeats
    tokens_per_s: float
    kv_cache_bytes: int  # the cache after generation (prompt + new - 1 positions)
    peak_memory_bytes: int | None  # device peak during generation; None on CPU
    seconds_each: tuple[float, ...] = ()  # every repeat, for the spread of a speedup

    def to_dict(self) -> dict:
        return asdict(self)


def kv_cache_bytes(cache) -> int:
    """Bytes held by keys and values of a transformers Cache (layers never written hold none)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate_kwargs(model: nn.Module, ids: torch.Tensor, new_tokens: int, tokenizer: Any = None) -> dict:
    """Greedy generation of exactly `new_tokens` for every row.

    min_new_tokens = max_new_tokens masks every eos id until the last step, so a row never stops
    early; the eos ids are given as one list (config, generation_config.json and tokenizer ids
    together: Llama-3 configs hold a list) so that all of them are masked. The pad id must be one
    int (a list there is a TypeError in GenerationConfig.validate); with no row finishing early it
    is never written. The attention mask is given: random prompt ids that equal the pad id would
    otherwise be read as padding.
    """
    config, generation = model.config, getattr(model, "generation_config", None)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  do_sample=False, use_cache=True, pad_token_id=pad_id(config, generation, tokenizer))
    if eos := eos_ids(config, generation, tokenizer):
        kwargs["eos_token_id"] = list(eos)
    return kwargs


@torch.inference_mode()
def measure_speed(model: nn.Module, prompt_tokens: int = 2048, new_tokens: int = 2048, batch: int = 1,
                  warmup: int = 1, repeats: int = 3, seed: int = 0, tokenizer: Any = None) -> SpeedResult:
    """Median wall time of greedy generation with the KV cache, device-synchronised, after warm-up.

    `tokenizer` (optional) adds its eos and pad ids to the config's. Raises RedundancyError when the
    config names no vocabulary size, or when generation returns other than `new_tokens` new tokens
    (a stop other than eos, e.g. max_time in generation_config.json).
    """
    device = next(model.parameters()).device
    vocab = vocab_size(model.config)
    if not vocab:
        raise RedundancyError(f"{type(model).__name__}'s config names no vocab_size (nor does its "
                              "text_config): cannot draw prompt ids; fix config.json")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, prompt_tokens), generator=g).to(device)
    kwargs = _generate_kwargs(model, ids, new_tokens, tokenizer)
    for _ in range(warmup):
        model.generate(ids, **kwargs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, out = [], None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = model.generate(ids, return_dict_in_generate=True, **kwargs)
        _sync(device)
        times.append(time.perf_counter() - t0)
    made = out.sequences.shape[-1] - prompt_tokens
    if made != new_tokens:
        raise RedundancyError(f"generation stopped after {made} of {new_tokens} new tokens: something other "
                              "than eos ends it (max_time or stop_strings in generation_config.json?); "
                              "remove that setting to time the model")
    secs = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return SpeedResult(prompt_tokens, new_tokens, batch, secs, batch * (prompt_tokens + new_tokens) / secs,
                       kv_cache_bytes(out.past_key_values), peak, tuple(times))


def speedup_range(base_seconds: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """(lowest, highest) speedup the repeats allow: the slowest run against the baseline's fastest,
    and the fastest against its slowest. A range covering 1.0 is noise, not a speedup."""
    return min(base_seconds) / max(seconds), max(base_seconds) / min(seconds)


def sdr(baseline_avg: float, dropped_avg: float, speedup: float,
        spread: tuple[float, float] | None = None) -> float:
    """Speedup degradation ratio gamma = (average drop in %) / (speedup in %); lower is better.
    NaN where nothing is gained, or where `spread` (speedup_range) covers 1.0."""
    drop_pct = 100.0 * (baseline_avg - dropped_avg) / baseline_avg
    gain_pct = 100.0 * (speedup - 1.0)
    if gain_pct <= 0 or (spread is not None and spread[0] <= 1.0 <= spread[1]):
        return float("nan")
    return drop_pct / gain_pct
