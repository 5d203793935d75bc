"""redundancy: how redundant is each block, attention and MLP layer of a transformer, over training.

    >>> import redundancy as rd
    >>> series = rd.open_series("builtin:tiny")
    >>> store = rd.CubeStore.open("out/cube.zarr", rd.ScoreSettings().calibration())
    >>> rd.score_series(series, store, rd.ScoreSettings(datasets=["prose", "math"]))
    >>> cube = rd.open_cube("out/cube.zarr")  # xarray.Dataset, lazy
"""
from ._pipeline import Events, ScoreSettings, load_checkpoint, score_series
from .calibration import CALIBRATION_SETS, Calibration, calibration_tokens
from .cube import CubeStore, open_cube
from .drop import DropPlan, iterative_order, load_any, load_dropped, materialize
from .errors import (CalibrationError, NonFiniteActivationError, NotFoundError, OutputError, RedundancyError,
                     SelfCheckError, SeriesError, StoreError, UnsupportedFamilyError)
from .evaluate import evaluate
from .families import FAMILIES, Family, family_for
from .quantize import quantize
from .results import open_results, results_table, write_results
from .scoring import METRICS, MODULES, Scorer, score_layerwise
from .sources import PRESETS, Checkpoint, Series, list_checkpoints, open_series
from .speed import measure_speed, sdr
from .study import StudySettings, run_study

__version__ = "0.1.0"

__all__ = [
    "open_series", "Series", "Checkpoint", "list_checkpoints", "PRESETS",
    "calibration_tokens", "Calibration", "CALIBRATION_SETS",
    "Family", "FAMILIES", "family_for",
    "Scorer", "score_layerwise", "METRICS", "MODULES",
    "score_series", "ScoreSettings", "Events", "load_checkpoint",
    "CubeStore", "open_cube",
    "DropPlan", "materialize", "load_dropped", "load_any", "iterative_order",
    "evaluate", "measure_speed", "sdr", "quantize", "run_study", "StudySettings",
    "open_results", "write_results", "results_table",
    "RedundancyError", "NotFoundError", "UnsupportedFamilyError", "SeriesError", "CalibrationError",
    "NonFiniteActivationError", "StoreError", "SelfCheckError", "OutputError",
]
