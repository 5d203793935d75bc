"""The post-drop chain on a chosen checkpoint: plans materialized, evaluated with lm-eval, perplexity
on held-out windows, timed, quantized to 4 bits, every row in one results store (Table 1).

Names are imported on first use (PEP 562): `redundancy.study.settings` (StudySettings, read by the
CLI when it starts) loads without torch. The functions named as their modules are reached through
them, or from the top: `redundancy.evaluate`, `redundancy.perplexity`, `redundancy.quantize`
(`redundancy.study.quantize` is the module).
"""
from __future__ import annotations

from .._lazy import lazy_names

# public name -> the module of this package that defines it
_LAZY = {
    "StudySettings": "settings",
    **dict.fromkeys(["Variant", "plans", "run_study"], "chain"),
    **dict.fromkeys(["evaluate_with_stderr", "preset_tasks"], "evaluate"),
    **dict.fromkeys(["heldout_from_cube", "orders_from_cube", "study_from_cube", "study_target", "StudyRun"],
                    "from_cube"),
    "heldout_perplexity": "perplexity",
    **dict.fromkeys(["BASELINE", "has_results", "open_results", "results_table", "write_results"], "results"),
    **dict.fromkeys(["SpeedResult", "measure_speed", "sdr", "speedup_range"], "speed"),
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
