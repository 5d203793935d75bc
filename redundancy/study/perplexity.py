"""Perplexity of a model on held-out windows of a calibration set (windows no scoring run drew)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


@torch.inference_mode()
def window_nll(model: nn.Module, tokens: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """tokens (n, T) -> (n,): each window's mean next-token negative log-likelihood, in fp32."""
    device = next(model.parameters()).device
    out = []
    for batch in tokens.split(batch_size):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1]  # (B, T-1, V)
        for z, target in zip(logits, batch[:, 1:]):  # one window at a time: one fp32 copy of z
            z = z.float()
            nll = torch.logsumexp(z, dim=-1) - z.gather(-1, target[:, None]).squeeze(-1)  # (T-1,)
            out.append(nll.mean())
    return torch.stack(out).cpu()


def perplexity(model: nn.Module, tokens: torch.Tensor, batch_size: int = 8) -> float:
    """exp(mean next-token NLL) over every predicted token of the windows (all of one length)."""
    return math.exp(float(window_nll(model, tokens, batch_size).mean()))


def heldout_perplexity(model: nn.Module, tokenizer: Any, *, sets: dict[str, tuple[str, str]], n: int,
                       seq_len: int, scored: tuple[int, int], batch_size: int = 8) -> dict[str, float]:
    """label -> perplexity on n held-out windows of that set; `sets`: label -> (spec, text_field) and
    `scored` = (n_samples, seq_len) of the scoring run whose windows must be avoided."""
    from ..calibration import heldout_tokens

    result = {}
    for label, (spec, field) in sets.items():
        tokens = heldout_tokens(spec, tokenizer, n=n, seq_len=seq_len, scored=scored, text_field=field).tokens
        result[label] = perplexity(model, tokens, batch_size)
    return result
