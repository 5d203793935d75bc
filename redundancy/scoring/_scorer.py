"""One forward pass per batch scores every layer's block, attention and MLP on every metric."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

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
        with residual_hooks(self.model, self.family, self._on_layer), _fp32_matmul_precision():
            # the trunk only: the LM head is not needed and would cost a (B, T, vocab) projection
            self.model.base_model(input_ids=input_ids, use_cache=False)
        out, self._out = self._out, None
        return out

    def _on_layer(self, idx: int, sites: dict[str, torch.Tensor]) -> None:
        stats = module_stats(sites, self.family.residual)  # fields (B, T, 3)
        for k, metric in enumerate(self.metrics):
            self._out[:, idx, :, k] = metric.per_token(stats).mean(dim=1)  # token mean -> (B, 3)

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


# Per layer, the distinct streams (K of them) are stacked and one fp32 Gram matrix per token gives
# every dot product at once. Each module's X, Y, f and u is a 0/1 combination of the streams.
_SEQUENTIAL = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
               "hook_mlp_out", "attn.hook_in", "mlp.hook_in")
_PARALLEL = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
             "attn.hook_in", "mlp.hook_in")
# module -> (X, Y, f, u), each a tuple of streams summed; f of a block is a + m, its output
_ROLES = {
    "sequential": {"block": (("hook_resid_pre",), ("hook_resid_post",), ("hook_attn_out", "hook_mlp_out"), ("hook_resid_pre",)),
                   "attn": (("hook_resid_pre",), ("hook_resid_mid",), ("hook_attn_out",), ("attn.hook_in",)),
                   "mlp": (("hook_resid_mid",), ("hook_resid_post",), ("hook_mlp_out",), ("mlp.hook_in",))},
    "parallel": {"block": (("hook_resid_pre",), ("hook_resid_post",), ("hook_attn_out", "hook_mlp_out"), ("hook_resid_pre",)),
                 "attn": (("hook_resid_pre",), ("hook_resid_pre", "hook_attn_out"), ("hook_attn_out",), ("attn.hook_in",)),
                 "mlp": (("hook_resid_pre",), ("hook_resid_pre", "hook_mlp_out"), ("hook_mlp_out",), ("mlp.hook_in",))},
}
_STATS = (("xy", 0, 1), ("xx", 0, 0), ("yy", 1, 1), ("ff", 2, 2), ("uf", 3, 2), ("uu", 3, 3))
_WEIGHTS: dict[tuple[str, torch.device], torch.Tensor] = {}


def _stat_weights(residual: str, device: torch.device) -> torch.Tensor:
    """(K*K, 3 * 6) map from a flattened Gram matrix to every statistic of every module.

    <p, q> for role vectors p, q (0/1 over the K streams) is sum_ij p_i q_j G_ij.
    """
    key = (residual, device)
    if key not in _WEIGHTS:
        streams = _SEQUENTIAL if residual == "sequential" else _PARALLEL
        cols = []
        for mod in MODULES:
            roles = torch.zeros(4, len(streams))  # X, Y, f, u
            for r, parts in enumerate(_ROLES[residual][mod]):
                for part in parts:
                    roles[r, streams.index(part)] = 1.0
            cols += [torch.outer(roles[a], roles[b]).flatten() for _, a, b in _STATS]
        _WEIGHTS[key] = torch.stack(cols, dim=1).to(device)
    return _WEIGHTS[key]


def module_stats(sites: dict[str, torch.Tensor], residual: str) -> TokenStats:
    """Per-token statistics of block, attn and mlp of one layer; each field (B, T, 3), fp32."""
    streams = _SEQUENTIAL if residual == "sequential" else _PARALLEL
    h = sites["hook_resid_pre"]  # (B, T, D)
    stacked = torch.empty(*h.shape[:-1], len(streams), h.shape[-1], dtype=torch.float32, device=h.device)
    for i, name in enumerate(streams):
        stacked[..., i, :].copy_(sites[name])  # casts to fp32 while copying: one write per stream
    gram = stacked @ stacked.transpose(-1, -2)  # (B, T, K, K): every dot product, one pass
    stats = gram.flatten(-2) @ _stat_weights(residual, h.device)  # (B, T, 3 * 6)
    stats = stats.unflatten(-1, (len(MODULES), len(_STATS)))  # (B, T, 3, 6)
    return TokenStats(**{name: stats[..., i] for i, (name, _, _) in enumerate(_STATS)})


@contextmanager
def _fp32_matmul_precision() -> Iterator[None]:
    """Full fp32 matmuls for the Gram products (TF32 would cost 1e-3 in a cosine)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _check_finite(scores: torch.Tensor, start: int, metrics: list[str]) -> None:
    if bool(torch.isfinite(scores).all()):
        return
    b, layer, j, k = (int(i) for i in torch.nonzero(~torch.isfinite(scores))[0])
    raise NonFiniteActivationError(
        f"non-finite {metrics[k]} at sample {start + b}, layer {layer}, {MODULES[j]}: the residual "
        "stream holds NaN or inf (fp16 overflow?). Score in bfloat16 or float32 (--dtype); nothing "
        "was stored for this checkpoint and dataset.")
