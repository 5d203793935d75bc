"""One forward pass per batch scores every layer's block, attention and MLP on every metric."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import NonFiniteActivationError
from ..families import Family, family_for
from ._hooks import decoder_layers, residual_hooks
from ._metrics import DEFAULT_METRICS, METRICS, MODULES, TokenStats


class Scorer:
    """Scores a causal LM. `score_batch` returns a device tensor (batch, layer, module, metric)."""

    def __init__(self, model: nn.Module, metrics: Sequence[str] = DEFAULT_METRICS) -> None:
        self.model = model
        self.family: Family = family_for(model.config)
        self.metrics = [METRICS.get(m) for m in metrics]
        self.metric_names = [m.name for m in self.metrics]
        self.n_layers = len(decoder_layers(model, self.family))
        self._out: torch.Tensor | None = None

    @torch.inference_mode()
    def score_batch(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> scores (B, L, 3, M) fp32, on the model's device, token-averaged."""
        b = input_ids.shape[0]
        self._out = torch.empty(b, self.n_layers, len(MODULES), len(self.metrics),
                                dtype=torch.float32, device=input_ids.device)
        with residual_hooks(self.model, self.family, self._on_layer):
            # the trunk only: the LM head is not needed and would cost a (B, T, vocab) projection
            self.model.base_model(input_ids=input_ids, use_cache=False)
        out, self._out = self._out, None
        return out

    def _on_layer(self, idx: int, sites: dict[str, torch.Tensor]) -> None:
        for j, stats in enumerate(module_stats(sites, self.family.residual)):
            for k, metric in enumerate(self.metrics):
                self._out[:, idx, j, k] = metric.per_token(stats).mean(dim=-1)

    def score(self, tokens: torch.Tensor, batch_size: int,
              on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """tokens (n, T) -> scores (n, L, 3, M) as numpy; one host copy per batch."""
        device = next(self.model.parameters()).device
        parts = []
        for start in range(0, tokens.shape[0], batch_size):
            batch = tokens[start:start + batch_size].to(device, non_blocking=True)
            scores = self.score_batch(batch)
            _check_finite(scores, start, self.metric_names)
            parts.append(scores.cpu().numpy())
            if on_batch is not None:
                on_batch(batch.shape[0])
        return np.concatenate(parts, axis=0)


def module_stats(sites: dict[str, torch.Tensor], residual: str) -> list[TokenStats]:
    """Per-token statistics for block, attn and mlp of one layer, in fp32 (see families.py)."""
    t = {k: v.float() for k, v in sites.items()}  # each (B, T, D)
    h = t["hook_resid_pre"]
    t["block_f"] = t["hook_resid_post"] - h
    if residual == "parallel":  # both sublayers read h; o = h + a + m
        t["attn_y"], t["mlp_x"] = h + t["hook_attn_out"], h
        t["mlp_y"] = h + t["hook_mlp_out"]
    else:
        t["attn_y"] = t["mlp_x"] = t["hook_resid_mid"]
        t["mlp_y"] = t["hook_resid_post"]
    sq: dict[str, torch.Tensor] = {}

    def norm2(name: str) -> torch.Tensor:  # (B, T); a stream shared by two modules is reduced once
        if name not in sq:
            sq[name] = torch.linalg.vecdot(t[name], t[name])
        return sq[name]

    def stats(x: str, y: str, f: str, u: str) -> TokenStats:
        return TokenStats(torch.linalg.vecdot(t[x], t[y]), norm2(x), norm2(y), norm2(f),
                          torch.linalg.vecdot(t[u], t[f]), norm2(u))

    return [stats("hook_resid_pre", "hook_resid_post", "block_f", "hook_resid_pre"),
            stats("hook_resid_pre", "attn_y", "hook_attn_out", "attn.hook_in"),
            stats("mlp_x", "mlp_y", "hook_mlp_out", "mlp.hook_in")]


def _check_finite(scores: torch.Tensor, start: int, metrics: list[str]) -> None:
    if bool(torch.isfinite(scores).all()):
        return
    b, layer, j, k = (int(i) for i in torch.nonzero(~torch.isfinite(scores))[0])
    raise NonFiniteActivationError(
        f"non-finite {metrics[k]} at sample {start + b}, layer {layer}, {MODULES[j]}: the residual "
        "stream holds NaN or inf (fp16 overflow?). Score in bfloat16 or float32 (--dtype); nothing "
        "was stored for this checkpoint and dataset.")
