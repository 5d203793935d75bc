"""One forward pass per batch scores every layer's block, attention and MLP on every metric."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .._config import check_text_only
from ..errors import NonFiniteActivationError
from ..families import Family, family_for
from ._ablation import ABLATION_METRICS, ablate
from ._first_order import first_order
from ._hooks import decoder_layers, residual_hooks
from ._metrics import DEFAULT_METRICS, METRICS, MODULES, TokenStats
from ._selfcheck import check, layer_deviation


class Scorer:
    """Scores a causal LM. `score_batch` returns a device tensor (batch, layer, module, metric).

    The first batch a Scorer sees is self-checked (scoring/_selfcheck.py): a layer whose captured
    streams do not rebuild its output raises SelfCheckError before any score is returned.
    """

    def __init__(self, model: nn.Module, metrics: Sequence[str] = DEFAULT_METRICS,
                 self_check: bool = True) -> None:
        self.model = model
        self._deviations: torch.Tensor | None = None
        self._to_check = self_check
        check_text_only(model.config)  # a wrapper's layers are not where the family table says
        self.family: Family = family_for(model.config)
        self.metrics = [METRICS.get(m) for m in metrics]
        self.metric_names = [m.name for m in self.metrics]
        self._cheap = [m for m in self.metrics if m.per_token is not None]
        self._exact = any(m in ABLATION_METRICS for m in self.metric_names)
        self._grad = "loss_delta_grad" in self.metric_names
        self.n_layers = len(decoder_layers(model, self.family))
        self._gram: torch.Tensor | None = None

    @torch.inference_mode()
    def score_batch(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> scores (B, L, 3, M) fp32, on the model's device, token-averaged."""
        b, t = input_ids.shape
        # each layer's hook only writes its Gram matrices; the statistics and metrics then run
        # once for all layers, so their small ops are not repeated per layer
        self._gram = torch.empty(self.n_layers, b, t, len(_STREAMS), len(_STREAMS),
                                 dtype=torch.float32, device=input_ids.device)
        if self._to_check:
            self._deviations = torch.zeros(self.n_layers, device=input_ids.device)
        with residual_hooks(self.model, self.family, self._on_layer), _fp32_matmul_precision():
            # the trunk only: the LM head is not needed and would cost a (B, T, vocab) projection
            self.model.base_model(input_ids=input_ids, use_cache=False)
            if self._deviations is not None:
                deviations, self._deviations = self._deviations, None
                check(deviations, self.family, next(self.model.parameters()).dtype)
                self._to_check = False
            stats = stats_from_gram(self._gram, self.family.residual)  # fields (L, B, T, 3)
        self._gram = None
        cheap = [m.per_token(stats).mean(dim=2) for m in self._cheap]  # each (L, B, 3)
        exact = ablate(self.model, self.family, input_ids) if self._exact else None
        grad = first_order(self.model, self.family, input_ids) if self._grad else None
        cols, i = [], 0
        for m in self.metrics:  # in the order asked: cheap ones from the Gram, the others as named
            if m.per_token is not None:
                cols.append(cheap[i].transpose(0, 1))
                i += 1
            else:
                cols.append(grad if m.name == "loss_delta_grad"
                            else exact[..., ABLATION_METRICS.index(m.name)])
        return torch.stack(cols, dim=-1)  # (B, L, 3, M)

    def _on_layer(self, idx: int, sites: dict[str, torch.Tensor]) -> None:
        if self._deviations is not None:
            self._deviations[idx] = layer_deviation(sites)
            if not torch.isfinite(self._deviations[idx]):
                return  # streams of the wrong shape: the Gram cannot be formed; check() reports it
        layer_gram(sites, out=self._gram[idx])

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


# Per layer, five streams are stacked and one fp32 Gram matrix per token gives every dot product at
# once. Each module's X, Y, f and u is a 0/1 combination of them: the residual after attention is
# h + a and the layer's output h + a + m in every form of the family table, so they are summed here
# in fp32 rather than captured (5 streams instead of 7 halve the Gram's cost; the stored bf16
# residual differs from the exact sum by one rounding, far below the scores' precision).
_STREAMS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "attn.hook_in", "mlp.hook_in")
_H = ("hook_resid_pre",)
_A = ("hook_resid_pre", "hook_attn_out")
_M = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")
# module -> (X, Y, f, u), each a tuple of streams summed; f of a block is a + m, its output
_ROLES = {
    "sequential": {"block": (_H, _M, ("hook_attn_out", "hook_mlp_out"), _H),
                   "attn": (_H, _A, ("hook_attn_out",), ("attn.hook_in",)),
                   "mlp": (_A, _M, ("hook_mlp_out",), ("mlp.hook_in",))},
    "parallel": {"block": (_H, _M, ("hook_attn_out", "hook_mlp_out"), _H),
                 "attn": (_H, _A, ("hook_attn_out",), ("attn.hook_in",)),
                 "mlp": (_H, ("hook_resid_pre", "hook_mlp_out"), ("hook_mlp_out",), ("mlp.hook_in",))},
}
_STATS = (("xy", 0, 1), ("xx", 0, 0), ("yy", 1, 1), ("ff", 2, 2), ("uf", 3, 2), ("uu", 3, 3))
_WEIGHTS: dict[tuple[str, torch.device], torch.Tensor] = {}  # bounded: residual forms x devices


def _stat_weights(residual: str, device: torch.device) -> torch.Tensor:
    """(K*K, 3 * 6) map from a flattened Gram matrix to every statistic of every module.

    <p, q> for role vectors p, q (0/1 over the K streams) is sum_ij p_i q_j G_ij.
    """
    key = (residual, device)
    if key not in _WEIGHTS:
        cols = []
        for mod in MODULES:
            roles = torch.zeros(4, len(_STREAMS))  # X, Y, f, u
            for r, parts in enumerate(_ROLES[residual][mod]):
                for part in parts:
                    roles[r, _STREAMS.index(part)] = 1.0
            cols += [torch.outer(roles[a], roles[b]).flatten() for _, a, b in _STATS]
        _WEIGHTS[key] = torch.stack(cols, dim=1).to(device)
    return _WEIGHTS[key]


def layer_gram(sites: dict[str, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token Gram matrix of one layer's five streams: (B, T, 5, 5) fp32."""
    h = sites["hook_resid_pre"]  # (B, T, D)
    stacked = torch.empty(*h.shape[:-1], len(_STREAMS), h.shape[-1], dtype=torch.float32, device=h.device)
    for i, name in enumerate(_STREAMS):
        stacked[..., i, :].copy_(sites[name])  # casts to fp32 while copying: one write per stream
    return torch.matmul(stacked, stacked.transpose(-1, -2), out=out)  # every dot product, one pass


def stats_from_gram(gram: torch.Tensor, residual: str) -> TokenStats:
    """Gram matrices (..., 5, 5) -> statistics of block, attn and mlp; each field (..., 3)."""
    stats = gram.flatten(-2) @ _stat_weights(residual, gram.device)  # (..., 3 * 6)
    stats = stats.unflatten(-1, (len(MODULES), len(_STATS)))  # (..., 3, 6)
    return TokenStats(**{name: stats[..., i] for i, (name, _, _) in enumerate(_STATS)})


def module_stats(sites: dict[str, torch.Tensor], residual: str) -> TokenStats:
    """Per-token statistics of block, attn and mlp of one layer; each field (B, T, 3), fp32."""
    return stats_from_gram(layer_gram(sites), residual)


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
