"""Scoring: hooks, metrics and the one-pass scorer."""
from ._hooks import residual_hooks
from ._layerwise import score_layerwise
from ._metrics import DEFAULT_METRICS, METRICS, MODULES, Metric, TokenStats
from ._scorer import Scorer, module_stats

__all__ = ["Scorer", "score_layerwise", "residual_hooks", "module_stats", "METRICS", "DEFAULT_METRICS",
           "MODULES", "Metric", "TokenStats"]
