"""Orchestration: a series scored into the cube (sources -> calibration -> scoring -> cube), resumable
per cell, locally or as Ray tasks; dropping orders stored beside the scores."""
from .orders import order_series
from .run import EXECUTORS, open_histories, order_history, score_history
from .score import load_checkpoint, score_series
from .settings import DTYPES, Events, Fetcher, ScoreSettings, make_settings

__all__ = ["ScoreSettings", "make_settings", "Events", "Fetcher", "DTYPES", "score_series", "load_checkpoint",
           "order_series", "score_series_ray", "EXECUTORS", "open_histories", "score_history",
           "order_history"]


def __getattr__(name: str):
    if name == "score_series_ray":  # Ray is an optional dependency: imported when asked for
        from .ray_executor import score_series_ray
        return score_series_ray
    raise AttributeError(name)
