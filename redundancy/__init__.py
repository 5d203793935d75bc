"""redundancy: how redundant is each block, attention and MLP layer of a transformer, over training.

    >>> import redundancy as rd
    >>> settings = rd.ScoreSettings(datasets=["prose", "math"])  # checked as it is built
    >>> rd.score_history("builtin:tiny", out="out/cube.zarr", settings=settings)
    >>> cube = rd.open_cube("out/cube.zarr")  # xarray.Dataset, lazy

Names are imported on first use (PEP 562), so `import redundancy` and the CLI start without torch.
"""
from __future__ import annotations

from ._lazy import lazy_names
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


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
