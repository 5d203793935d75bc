"""redundancy: how redundant is each block, attention and MLP layer of a transformer, over training.

    >>> import redundancy as rd
    >>> series = rd.open_series("builtin:tiny")
    >>> store = rd.CubeStore.open("out/cube.zarr", rd.ScoreSettings().calibration())
    >>> rd.score_series(series, store, rd.ScoreSettings(datasets=["prose", "math"]))
    >>> cube = rd.open_cube("out/cube.zarr")  # xarray.Dataset, lazy

Names are imported on first use (PEP 562), so `import redundancy` and the CLI start without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CalibrationError,
    NonFiniteActivationError,
    NotFoundError,
    OutputError,
    RedundancyError,
    SelfCheckError,
    SeriesError,
    StoreError,
    UnsupportedFamilyError,
)
from .families import FAMILIES, MODULES, Family, family_for

__version__ = "0.1.0"

# public name -> the subpackage that defines it
_LAZY = {
    **dict.fromkeys(["open_series", "Series", "Checkpoint", "list_checkpoints", "PRESETS"], "sources"),
    **dict.fromkeys(["calibration_tokens", "heldout_tokens", "Calibration", "CALIBRATION_SETS"],
                    "calibration"),
    **dict.fromkeys(["Scorer", "score_layerwise", "METRICS"], "scoring"),
    **dict.fromkeys(["score_series", "Events", "load_checkpoint", "order_series", "score_history",
                     "order_history", "open_histories", "EXECUTORS"], "pipeline"),
    **dict.fromkeys(["ScoreSettings", "Selection", "HubAccess"], "settings"),
    "StudySettings": "study.settings",
    **dict.fromkeys(["drop_order", "joint_order", "order_from_cube"], "orders"),
    **dict.fromkeys(["CubeStore", "open_cube", "check_cube", "CubeReport"], "cube"),
    "convert_megatron": "sources._megatron",
    **dict.fromkeys(["DropPlan", "materialize", "load_dropped", "load_any", "iterative_order"],
                    "drop"),
    **dict.fromkeys(["measure_speed", "sdr", "run_study", "study_from_cube", "open_results", "write_results",
                     "results_table"], "study"),
    "evaluate": "study.evaluate", "perplexity": "study.perplexity", "quantize": "study.quantize",
}

__all__ = [
    *_LAZY, "Family", "FAMILIES", "family_for", "MODULES",
    "RedundancyError", "NotFoundError", "UnsupportedFamilyError", "SeriesError", "CalibrationError",
    "NonFiniteActivationError", "StoreError", "SelfCheckError", "OutputError",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'redundancy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
