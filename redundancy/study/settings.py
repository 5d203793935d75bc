"""What a study is asked to do: StudySettings, each option declared once (default, help,
command-line names, check) with `redundancy._settings.setting`. Built = valid.

Light on purpose (no torch until a check reads a registry): the CLI builds its options from it
when it starts; the study package's own names are imported when first used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .._settings import Settings, at_least, device, mapping, metric_names, one_of, setting
from ..errors import RedundancyError

__all__ = ["StudySettings"]


def _quant_methods() -> list[str]:
    from .quantize import QUANTIZERS
    return QUANTIZERS.names()


def _eval_presets() -> list[str]:
    from .evaluate import EVAL_PRESETS
    return EVAL_PRESETS.names()


def _tasks(value: Sequence[str], label: str) -> list[str]:
    """lm-eval task names it knows (its index is built once, ~10 s, only when a name is not one of
    the built-in tasks). Raises NotFoundError with the closest names."""
    names = list(value or [])
    if names:
        from .evaluate import _check_known, _local_config, _task_manager

        if unknown := [t for t in names if _local_config(t) is None]:
            _check_known(unknown, _task_manager(True))
    return names


def _plan_kinds() -> list[str]:
    from ..drop import PLAN_KINDS
    return PLAN_KINDS.names()


def _eval_preset(value: str | None, label: str) -> str | None:
    """An evaluation preset's name; '' or None: none."""
    return one_of("evaluation preset", _eval_presets)(value, label) if value else None


def _ks(value: Mapping[str, Sequence[int]] | Sequence[str], label: str) -> dict[str, list[int]]:
    """Plan counts per kind: {'attn': [2, 4]} or the command line's ['attn=2,4', 'block=4']."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Mapping):
        parsed: dict[str, list[int]] = {}
        for spec in value:
            kind, _, counts = str(spec).partition("=")
            if not counts:
                raise RedundancyError(f"{label} {spec!r}: write KIND=K1,K2 with KIND one of "
                                      f"{', '.join(_plan_kinds())}")
            try:
                parsed[kind] = [int(k) for k in counts.split(",")]
            except ValueError:
                raise RedundancyError(f"{label} {spec!r}: counts are comma-separated integers, "
                                      "e.g. attn=4,8") from None
        value = parsed
    out = {}
    for kind, counts in mapping(value, label).items():
        one_of("plan kind", _plan_kinds)(kind, label)
        out[kind] = [at_least(1)(k, f"{label} {kind}=") for k in counts]
    return out


@dataclass
class StudySettings(Settings):
    """The study on one checkpoint: which drop plans (`ks`: counts per kind, orders from `dataset`'s
    scores by `order_metric`), how to evaluate them (lm-eval `preset` and `tasks`), time them (prompt
    + new tokens, `repeats` timed generations), quantize them, and measure held-out perplexity.
    Built = valid (counts, kinds, methods and preset names); what depends on the checkpoint (its
    positions, ids) is checked by `study.chain.check_settings` before any work.

    Raises RedundancyError (a count below its minimum, a malformed --k), NotFoundError (an unknown
    plan kind, 4-bit method or evaluation preset, with the closest name).
    """

    ks: dict[str, list[int]] = setting({"attn": [2, 4, 6], "mlp": [2, 4, 6], "block": [2, 4, 6],
                                        "joint": [4, 8]}, "plans, e.g. attn=4,8; repeat per kind", "--k",
                                       check=_ks)
    dataset: str = setting("prose", "calibration set whose orders to use", "--dataset")
    order_metric: str = setting("importance", "the metric whose order picks the plans, e.g. loss_delta "
                                "(scored with --metric loss_delta)", "--order-metric",
                                check=one_of("metric", metric_names))
    preset: str | None = setting("builtin", "evaluation preset: paper or builtin; '' for none", "--preset",
                                 check=_eval_preset)
    tasks: list[str] = setting([], "more lm-eval task names (repeat)", "--task", check=_tasks)
    limit: int | None = setting(None, "examples per task (default: all)", "--limit",
                                check=at_least(1, optional=True))
    eval_batch: int = setting(16, "examples per forward pass of the evaluation", "--eval-batch",
                              check=at_least(1))
    # timed generation: the study's 2048 + 2048 (None), each cut to half the model's positions where
    # those are fewer (Pythia, OLMo-1: 2048); explicit values past the positions are refused
    prompt_tokens: int | None = setting(None, "prompt tokens of each timed generation (default: 2048, or "
                                        "half the model's positions where fewer)", "--prompt",
                                        check=at_least(1, optional=True))
    new_tokens: int | None = setting(None, "tokens generated in each timed generation (default as --prompt; "
                                     "prompt + new must fit the model's positions)", "--new",
                                     check=at_least(1, optional=True))
    speed_batch: int = setting(1, "sequences per timed generation", "--batch", check=at_least(1))
    repeats: int = setting(5, "timed (baseline, plan) pairs per plan, run alternately; the spread of their "
                           "ratios gives the speedup's range (2 or more)",
                           "--repeats", check=at_least(2))
    quantize: Sequence[str] = setting(["awq", "gptq"], "4-bit methods for the largest Attn-k", "--quant",
                                      check=one_of("quantization method", _quant_methods, many=True))
    quantize_plans: Sequence[str] = setting([], "plans to quantize (default: the largest attention drop)",
                                            "--quantize-plan")
    group_size: int = setting(128, "weights per scale of the 4-bit models; must divide every layer width",
                              "--group-size", check=at_least(1))
    quant_samples: int = setting(64, "calibration windows for AWQ / GPTQ", "--quant-samples",
                                 check=at_least(1))
    n_grid: int = setting(20, "AWQ's scale grid per mapping", "--n-grid", check=at_least(1))
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...", "--device", check=device)
    # held-out perplexity: label -> (set spec, text field), on windows after the scoring pool of
    # `scored` = (n_samples, seq_len); study_from_cube fills both from the cube
    ppl_sets: dict[str, tuple[str, str]] = setting({}, "held-out perplexity sets: label -> (spec, field)",
                                                   check=mapping)
    ppl_samples: int = setting(64, "held-out windows per calibration set of the cube for perplexity "
                               "(0: none)", "--ppl-samples", check=at_least(0))
    ppl_seq_len: int | None = setting(None, "their length (default: the cube's seq_len)", "--ppl-seq-len",
                                      check=at_least(2, optional=True))
    scored: tuple[int, int] = setting((0, 0), "(n_samples, seq_len) of the scoring the held-out windows "
                                      "come after")
