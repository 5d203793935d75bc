"""Layer-by-layer scoring: one decoder layer's weights on the device at a time.

The embedding runs first on every calibration window; then each layer is read from the
checkpoint's safetensors files, runs on all windows' hidden states (the same hooks and Gram
statistics as `Scorer`), and is freed. Peak device memory: one layer plus the hidden states.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._config import check_text_only
from ..errors import UnsupportedFamilyError
from ..families import Family, family_for, get_path
from ._hooks import _first, decoder_layers, residual_hooks
from ._metrics import DEFAULT_METRICS, METRICS, MODULES, Metric
from ._scorer import _check_finite, _fp32_matmul_precision, layer_gram, stats_from_gram
from ._selfcheck import check, layer_deviation
from ._shards import Shards, materialize, release, skeleton


def score_layerwise(checkpoint: str | Path, tokens: torch.Tensor, batch_size: int,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    metrics: Sequence[str] = DEFAULT_METRICS, offload_activations: bool = False,
                    on_layer: Callable[[int, int], None] | None = None) -> np.ndarray:
    """tokens (n, T) -> scores (n, L, 3, M) as numpy, equal to `Scorer.score` on the full model.

    `checkpoint` is a Hugging Face folder with safetensors weights. The hidden states of all n
    windows, (n, T, hidden) in `dtype`, stay on `device`, or on the host with
    `offload_activations` (then one batch at a time travels). `on_layer(l, L)` after each layer.
    """
    if exact := [m for m in metrics if METRICS.get(m).per_token is None]:
        raise UnsupportedFamilyError(f"{exact[0]} is an exact ablation: it re-runs the model's later "
                                     "layers and head for every module, which layer-by-layer mode "
                                     "(one layer at a time) cannot; score it in full mode")
    device = torch.device(device)
    shards = Shards(checkpoint)
    check_text_only(shards.config, str(checkpoint))
    model = skeleton(shards.config, dtype)
    family = family_for(model.config)
    if family.layerwise:
        raise UnsupportedFamilyError(f"layer-by-layer scoring of {family.model_type}: not supported "
                                     f"({family.layerwise}: this mode does not mirror it). "
                                     "Score this model in full mode.")
    trunk = _Trunk(model, family, shards, device)
    store = torch.device("cpu") if offload_activations else device
    hidden = trunk.embed(tokens, batch_size, store)  # list of (B, T, hidden)
    scorer = _LayerScorer(family, [METRICS.get(m) for m in metrics], dtype)
    layers = decoder_layers(model, family)
    out = torch.empty(tokens.shape[0], len(layers), len(MODULES), len(scorer.metrics))
    with residual_hooks(model, family, scorer.on_layer), _fp32_matmul_precision():
        for idx, layer in enumerate(layers):
            materialize(model, layer, shards=shards, path=f"{family.layers}.{idx}", device=device)
            out[:, idx] = scorer.run(trunk, idx, layer, hidden)
            release(layer)
            _check_finite(out[:, :idx + 1], 0, [m.name for m in scorer.metrics])
            if on_layer is not None:
                on_layer(idx, len(layers))
    return out.numpy()


class _Trunk:
    """What the model's own forward builds around its layers: embedding, rotary, position ids, masks."""

    def __init__(self, model: nn.Module, family: Family, shards: Shards, device: torch.device) -> None:
        self.model, self.family, self.shards, self.device = model, family, shards, device
        self.rotary = getattr(model.base_model, "rotary_emb", None)
        _check_trunk(model, family, self.rotary)
        # buffers only: small
        materialize(model, self.rotary, shards=shards, path="rotary_emb", device=device)
        self._kwargs: dict[tuple[int, str], dict] = {}

    @torch.inference_mode()
    def embed(self, tokens: torch.Tensor, batch_size: int, store: torch.device) -> list[torch.Tensor]:
        """tokens (n, T) -> hidden states entering layer 0, one (B, T, hidden) tensor per batch."""
        module = get_path(self.model, self.family.embed)
        with torch.inference_mode(False):  # loaded weights must not be inference tensors
            materialize(self.model, module, shards=self.shards, path=self.family.embed, device=self.device)
        scale = float(getattr(self.model.config, self.family.embed_scale)) if self.family.embed_scale else 1.0
        starts = range(0, tokens.shape[0], batch_size)
        out = [module(tokens[s:s + batch_size].to(self.device)) for s in starts]
        out = [(h * scale if scale != 1.0 else h).to(store) for h in out]  # Gemma-2 scales inside the module
        release(module)
        return out

    def layer_kwargs(self, h: torch.Tensor, idx: int) -> dict:
        """Keyword arguments of layer idx for a batch like h (B, T, hidden), as the forward builds them."""
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        config = self.model.config
        layer_types = getattr(config, "layer_types", None)  # gemma2, qwen2, qwen3: per layer
        kind = layer_types[idx] if layer_types else (
            "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention")  # mistral
        key = (h.shape[0], kind)
        if key not in self._kwargs:  # at most two batch sizes (full and last) per kind
            make = create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
            position_ids = torch.arange(h.shape[1], device=h.device).unsqueeze(0)  # (1, T)
            mask = make(config=config, inputs_embeds=h, attention_mask=None, past_key_values=None,
                        position_ids=position_ids)
            per_kind = "layer_type" in inspect.signature(self.rotary.forward).parameters
            rotary_kw = {"layer_type": kind} if per_kind else {}  # olmo3, gemma3: per kind
            position_embeddings = self.rotary(h, position_ids, **rotary_kw)  # (cos, sin)
            self._kwargs[key] = dict(attention_mask=mask, position_ids=position_ids,
                                     position_embeddings=position_embeddings)
        return self._kwargs[key]


def _check_trunk(model: nn.Module, family: Family, rotary: nn.Module | None) -> None:
    """Refuse a trunk whose forward does more before or between layers than this module mirrors."""
    known = {id(get_path(model, family.embed)), id(decoder_layers(model, family)),
             id(get_path(model, family.final_norm)), id(rotary)}
    extra = [name for name, child in model.base_model.named_children()
             if id(child) not in known and next(child.parameters(), None) is not None]
    if rotary is None or extra:
        what = "has no rotary_emb module" if rotary is None else f"has parts {extra} it does not know"
        raise UnsupportedFamilyError(
            f"layer-by-layer scoring of {model.config.model_type}: the trunk {what}; layer-by-layer "
            "mode builds embedding, rotary embedding and masks itself. Score this model in full mode.")


class _LayerScorer:
    """Runs one materialized layer over every batch of hidden states; per-sample scores."""

    def __init__(self, family: Family, metrics: list[Metric], dtype: torch.dtype) -> None:
        self.family, self.metrics, self.dtype = family, metrics, dtype
        self._gram: torch.Tensor | None = None
        self.checking = False  # set for each layer's first batch: the self-check runs on it

    def on_layer(self, idx: int, sites: dict[str, torch.Tensor]) -> None:
        if self.checking:  # raises before the Gram of a wrong-shaped stream is attempted
            check(layer_deviation(sites).reshape(1), self.family, self.dtype, first_layer=idx)
        self._gram = layer_gram(sites)  # (B, T, 5, 5) fp32

    @torch.inference_mode()
    def run(self, trunk: _Trunk, idx: int, layer: nn.Module, hidden: list[torch.Tensor]) -> torch.Tensor:
        """Advance every batch of `hidden` through `layer` in place; returns scores (n, 3, M) on the host."""
        parts = []
        for b, h in enumerate(hidden):
            self.checking = b == 0
            h = h.to(trunk.device)
            out = _first(layer(h, **trunk.layer_kwargs(h, idx)))
            stats = stats_from_gram(self._gram, self.family.residual)  # fields (B, T, 3)
            self._gram = None
            parts.append(torch.stack([m.per_token(stats).mean(dim=1) for m in self.metrics], -1))
            hidden[b] = out.to(hidden[b].device)  # the old batch is freed: one extra (B, T, hidden)
        return torch.cat(parts).cpu()  # (n, 3, M)
