"""Pure functions over the cube (xarray, numpy, scipy, matplotlib): no torch, no models.

Each takes labelled arrays and a `dim=` and returns labelled arrays (or a Figure).
"""
from . import dynamics, orders, plots, proxy, samples, seeds, stability, strategies
from .dynamics import corr_with_step, first_step_with_final_set, study_observation, trend, without_flagged
from .figures import loss_curve, save, step_flags, step_layer_heatmap
from .orders import drop_order, drop_sets, joint_order, random_order, reverse_order
from .proxy import agreement_over_steps, metric_agreement, proxy_scatter
from .report import draw_all, heatmaps
from .samples import bootstrap_interval, prefix_means, samples_for_same_drop_set
from .seeds import first_step_seeds_agree, seed_band, seed_rank_agreement, seed_spread, seeds_agree
from .stability import drop_set_overlap, jaccard, pairwise, rank_correlation
from .strategies import describe, strategy_agreement

__all__ = [
    "drop_order", "joint_order", "reverse_order", "random_order", "drop_sets",
    "rank_correlation", "pairwise", "jaccard", "drop_set_overlap",
    "prefix_means", "bootstrap_interval", "samples_for_same_drop_set",
    "corr_with_step", "first_step_with_final_set", "trend", "study_observation", "without_flagged",
    "step_flags",
    "strategy_agreement", "describe",
    "metric_agreement", "proxy_scatter", "agreement_over_steps",
    "seed_spread", "seed_rank_agreement", "seeds_agree", "first_step_seeds_agree", "seed_band",
    "step_layer_heatmap", "loss_curve", "save", "heatmaps", "draw_all",
    "dynamics", "orders", "plots", "proxy", "samples", "seeds", "stability", "strategies",
]
