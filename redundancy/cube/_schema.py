"""The cube's schema: one labelled cell per (model, step, dataset), combined into
(model, step, layer, module, dataset, sample) variables, one per metric."""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..families import MODULES

DIMS = ("model", "step", "layer", "module", "dataset", "sample")
# per-cell provenance, stored as labelled variables over (model, step, dataset)
PROVENANCE = ("fingerprint", "calibration_source", "dtype", "device", "revision", "source", "scored_at",
              "package_version", "duplicate_of", "partial_duplicate_of", "identical_to_final", "config_drift",
              "tokenizer_from", "stage", "suite", "seed", "seed_kind")
# calibration settings that must agree for every cell of one cube
SETTINGS_KEYS = ("n_samples", "seq_len", "seed", "pool_factor", "packing")


def make_cell(scores: np.ndarray, metrics: list[str], *, model: str, step: int, dataset: str,
              tokens: float | None, provenance: dict[str, Any]) -> xr.Dataset:
    """scores (sample, layer, module, metric) -> one cell: metric variables over (layer, module, sample)."""
    n, n_layers, _, _ = scores.shape
    data = {m: (("layer", "module", "sample"), scores[..., k].transpose(1, 2, 0).astype(np.float32))
            for k, m in enumerate(metrics)}
    for key in PROVENANCE:
        data[key] = ((), np.array(str(provenance.get(key, "")), dtype=object))
    coords = {"layer": np.arange(n_layers), "module": np.array(MODULES, dtype=object),
              "sample": np.arange(n), "model": np.array(model, dtype=object), "step": step,
              "dataset": np.array(dataset, dtype=object),
              "tokens": np.float64(np.nan if tokens is None else tokens)}
    return xr.Dataset(data, coords=coords)


def settings_diff(stored: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """Human-readable differences between two calibration settings, e.g. "seq_len: 128 stored, 256 asked"."""
    return [f"{k}: {stored.get(k)!r} stored, {asked.get(k)!r} asked" for k in SETTINGS_KEYS
            if stored.get(k) != asked.get(k)]


def make_order_cell(orders: dict[tuple[str, str], list[int]], n_layers: int, *, model: str, step: int,
                    dataset: str, metric: str) -> xr.Dataset:
    """{(strategy, module): layers in drop order} -> drop_order over (strategy, module, rank); -1 = none."""
    strategies = sorted({s for s, _ in orders}, key=["one-shot", "iterative"].index)
    modules = [m for m in MODULES if any(mm == m for _, mm in orders)]
    data = np.full((len(strategies), len(modules), n_layers), -1, dtype=np.int64)
    for (s, m), layers in orders.items():
        data[strategies.index(s), modules.index(m), :len(layers)] = layers
    return xr.Dataset({"drop_order": (("strategy", "module", "rank"), data)},
                      coords={"strategy": np.array(strategies, dtype=object),
                              "module": np.array(modules, dtype=object), "rank": np.arange(n_layers),
                              "model": np.array(model, dtype=object), "step": step,
                              "dataset": np.array(dataset, dtype=object)},
                      attrs={"metric": metric})
