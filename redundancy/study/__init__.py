"""The post-drop chain on a chosen checkpoint: plans materialized, evaluated with lm-eval, perplexity
on held-out windows, timed, quantized to 4 bits, every row in one results store (Table 1)."""
from .chain import StudySettings, Variant, plans, run_study
from .evaluate import evaluate, evaluate_with_stderr, preset_tasks
from .perplexity import heldout_perplexity, perplexity
from .quantize import quantize  # llmcompressor itself is imported when a model is quantized
from .results import BASELINE, has_results, open_results, results_table, write_results
from .speed import SpeedResult, measure_speed, sdr, speedup_range

__all__ = ["StudySettings", "Variant", "plans", "run_study", "evaluate", "evaluate_with_stderr",
           "preset_tasks", "perplexity", "heldout_perplexity", "BASELINE", "has_results", "open_results",
           "results_table", "write_results", "SpeedResult", "measure_speed", "sdr", "speedup_range",
           "quantize"]

