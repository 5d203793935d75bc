"""Generation speed and memory, as in the study: prefill P tokens, then generate G with the KV cache.

A plan's speedup is measured in pairs (`paired_speed`): the baseline and the plan generate
alternately in one window of one process, after warm-up, so a load that comes and goes on a shared
machine slows both sides of a pair alike; the speedup is the median of the per-pair ratios.
`speedup_bound` is what a plan can give at most, from the work it removes: a speedup above it says
the timing was disturbed, not that the plan is that fast."""
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
    # paired timing (paired_speed): the baseline's seconds in the same pairs, and the plan's bound
    baseline_seconds_each: tuple[float, ...] = ()
    speedup_bound: float | None = None

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


def _check_made(out: Any, prompt_tokens: int, new_tokens: int) -> None:
    made = out.sequences.shape[-1] - prompt_tokens
    if made != new_tokens:
        raise RedundancyError(f"generation stopped after {made} of {new_tokens} new tokens: something other "
                              "than eos ends it (max_time or stop_strings in generation_config.json?); "
                              "remove that setting to time the model")


def _timed(run: Any, single: float, min_run_time: float) -> float:
    """Seconds of one `run()`, device-synchronised: torch.utils.benchmark's blocked_autorange (the
    median of as many runs as fill `min_run_time`) where one run is shorter than that; one run on
    the same library's synchronising clock otherwise (blocked_autorange would spend a second, untimed
    run on estimating its block size: minutes for a large model)."""
    from torch.utils.benchmark import Timer
    from torch.utils.benchmark.utils.timer import timer

    if single < min_run_time:
        timer_ = Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
        return float(timer_.blocked_autorange(min_run_time=min_run_time).median)
    t0 = timer()
    run()
    return timer() - t0


@torch.inference_mode()
def paired_speed(baseline: nn.Module, model: nn.Module, prompt_tokens: int = 2048, new_tokens: int = 2048,
                 batch: int = 1, *, pairs: int = 5, warmup: int = 1, min_run_time: float = 0.05,
                 seed: int = 0, tokenizer: Any = None, bound: float | None = None) -> SpeedResult:
    """`model`'s generation speed against `baseline`'s, timed in pairs: after warm-up, baseline then
    model, `pairs` times over (A B A B ..., one process, one window), each side the median of a
    torch.utils.benchmark blocked_autorange where one generation is shorter than `min_run_time`
    seconds. A load that comes and goes slows both sides of a pair; `paired_speedup` of the result
    is the median of the per-pair ratios.

    Both models generate greedily from the same random prompt ids (batch, prompt_tokens), exactly
    `new_tokens` each (see `_generate_kwargs`). Returns `model`'s SpeedResult (seconds: median of its
    sides; seconds_each: its side of each pair; baseline_seconds_each: the baseline's side; the
    KV cache after generation; `bound`, e.g. from `speedup_bound`, stored as speedup_bound).
    Both models are on one device at once.
    Raises RedundancyError: pairs below 1, no vocabulary size in the baseline's config, models of
    other vocabularies, or a generation that ends before `new_tokens`.
    """
    if pairs < 1:
        raise RedundancyError(f"pairs {pairs!r}: time at least one pair")
    device = next(model.parameters()).device
    vocab = vocab_size(baseline.config)
    if not vocab or vocab_size(model.config) != vocab:
        raise RedundancyError(f"cannot time {type(model).__name__} against the baseline: vocabulary sizes "
                              f"{vocab_size(model.config)} and {vocab}; time models of one checkpoint")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, prompt_tokens), generator=g).to(device)
    runs, singles, cache = [], [], 0
    for m in (baseline, model):
        kwargs = _generate_kwargs(m, ids, new_tokens, tokenizer)
        for _ in range(max(warmup, 0)):
            m.generate(ids, **kwargs)
        _sync(device)
        t0 = time.perf_counter()
        out = m.generate(ids, return_dict_in_generate=True, **kwargs)  # the last warm-up, checked
        _sync(device)
        singles.append(time.perf_counter() - t0)
        _check_made(out, prompt_tokens, new_tokens)
        cache = kv_cache_bytes(out.past_key_values)  # the model's (second)
        runs.append(lambda m=m, kwargs=kwargs: m.generate(ids, **kwargs))
        del out
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    single = max(singles)
    base_times, times = [], []
    for _ in range(pairs):
        base_times.append(_timed(runs[0], single, min_run_time))
        times.append(_timed(runs[1], single, min_run_time))
    secs = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return SpeedResult(prompt_tokens, new_tokens, batch, secs, batch * (prompt_tokens + new_tokens) / secs,
                       cache, peak, tuple(times), tuple(base_times), bound)


def paired_speedup(base_seconds: Sequence[float], seconds: Sequence[float]) -> tuple[float, float, float]:
    """(median, lowest, highest) of the per-pair speedups base_seconds[i] / seconds[i] (seconds of
    pair i, as paired_speed times them). The lowest and highest bound the median's interval (for
    up to 8 pairs, the widest order statistics are its ~95% distribution-free interval).
    Raises RedundancyError where the two have other lengths or none."""
    if len(base_seconds) != len(seconds) or not seconds:
        raise RedundancyError(f"{len(base_seconds)} baseline and {len(seconds)} plan times: pairs need one "
                              "of each")
    ratios = [b / s for b, s in zip(base_seconds, seconds)]
    return statistics.median(ratios), min(ratios), max(ratios)


def _params(module: Any) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def module_costs(model: nn.Module, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    """Per-token work of each part of a (full) model, in FLOPs averaged over a prefill of
    `prompt_tokens` and a generation of `new_tokens`: "attn" and "mlp" (lists over layers),
    "fixed" (the head; the embedding is a lookup).

    A matrix product costs 2 FLOPs per weight per token (Kaplan et al. 2020, "Scaling laws for
    neural language models", Table 1: C_forward = 2N + 2 n_layer n_ctx d_attn); attention adds
    2 x 2 x context x (heads x head width) for scores and values, over the mean context
    (P (P + 1) / 2 + G P + G (G - 1) / 2) / (P + G). The norm in front of a module is the module's.
    Memory traffic in decoding is proportional: each weight is read once per token, and the
    KV cache, read once per attended position, is smaller than the scores' width.
    Raises UnsupportedFamilyError for a model_type not in the family table.
    """
    from .._config import _first, text_config
    from ..families import family_for, get_path

    family = family_for(model.config)
    layers = get_path(model, family.layers)
    c = text_config(model.config)
    heads = _first(c, "num_attention_heads", "n_head") or 1
    width = _first(c, "hidden_size", "n_embd", "d_model") or 0
    q_width = heads * (_first(c, "head_dim") or width // heads)
    p, g = prompt_tokens, new_tokens
    context = (p * (p + 1) / 2 + g * p + g * (g - 1) / 2) / max(p + g, 1)

    def part(layer: Any, path: str, norm: str | None) -> int:
        norm_module = get_path(layer, norm) if norm and _has(layer, norm) else None
        return _params(get_path(layer, path)) + _params(norm_module)

    attn = [2 * part(layer, family.attn, family.attn_norm) + 4 * context * q_width for layer in layers]
    mlp = [2 * part(layer, family.mlp, family.mlp_norm) for layer in layers]
    head = model.get_output_embeddings()
    return {"attn": attn, "mlp": mlp, "fixed": 2 * _params(head)}


def _has(root: Any, path: str) -> bool:
    try:
        from ..families import get_path
        get_path(root, path)
    except AttributeError:
        return False
    return True


def speedup_bound(costs: dict[str, Any], drop_attn: Sequence[int], drop_mlp: Sequence[int], *,
                  weight_ratio: float = 1.0) -> float:
    """The most a plan dropping `drop_attn` and `drop_mlp` (layer indices) can speed generation up,
    as a factor (1.0: nothing removed). The larger of two limits, since either can dominate:

    - work: (all work) / (work left), from `module_costs` (the study's L / (L - k) for k of L
      blocks, less for the head's fixed share);
    - per-module overhead (small models, where time goes to launching modules, not to their
      arithmetic): each decoder layer costs at most one unit whether attention, MLP or both are
      dropped from it, and the rest of a generation step (embedding, head, token choice, cache
      bookkeeping) at least one unit: (L + 1) / (L + 1 - layers touched).

    `weight_ratio` multiplies the bound for a quantized model: (bits of the source weights) / 4
    for 4-bit weights, the most reading fewer weight bytes can give. Raises RedundancyError for a
    layer index outside the model.
    """
    attn, mlp = costs["attn"], costs["mlp"]
    n = len(attn)
    if bad := [i for i in (*drop_attn, *drop_mlp) if not 0 <= int(i) < n]:
        raise RedundancyError(f"layer {bad[0]} is not in a model of {n} layers: the plan and the model "
                              "do not match")
    total = sum(attn) + sum(mlp) + costs["fixed"]
    removed = sum(attn[i] for i in set(drop_attn)) + sum(mlp[i] for i in set(drop_mlp))
    work = total / (total - removed) if total > removed else float("inf")
    touched = len(set(drop_attn) | set(drop_mlp))
    overhead = (n + 1) / (n + 1 - touched)
    return max(work, overhead) * weight_ratio


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
