"""The post-drop commands: `drop`, `evaluate`, `quantize`, `study` (all of them on a plan grid) and
`table` (Table 1 from a results store)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..study.settings import StudySettings
from . import _options as o
from ._app import command


def _T(field: str, *flags: str):  # noqa: N802 - an option of StudySettings, as declared there
    option = o.setting(StudySettings, field)
    if flags:  # another command's name for the same setting (evaluate's --batch-size)
        option.param_decls = flags
    return option


@command()
def drop(checkpoint: Path = typer.Argument(..., help=o.CHECKPOINT, callback=o.existing),
         out: Path = o.out("folder for the dropped checkpoint"),
         attn: str = typer.Option("", help="attention layers to drop, e.g. 3,5,7"),
         mlp: str = typer.Option("", help="MLP layers to drop"),
         block: str = typer.Option("", help="whole layers to drop"),
         kind: Optional[str] = typer.Option(None, help="attn, mlp, block or joint: "
                                            "take the order from --store",
                                            callback=o.one_of("kind", o.kinds)),
         k: Optional[int] = o.count(None, "how many to drop (with --kind)"),
         store: Optional[str] = o.cube("cube holding the scores (with --kind; a folder or s3://...)", None,
                                       "--store"),
         dataset: Optional[str] = typer.Option(None, help="calibration set whose order to use"),
         strategy: str = typer.Option("one-shot", help="one-shot or iterative "
                                      "(stored by `redundancy order`)",
                                      callback=o.one_of("strategy", lambda: o.STRATEGIES)),
         overwrite: bool = o.OVERWRITE) -> None:
    """Write CHECKPOINT without the dropped modules: loads with AutoModelForCausalLM
    (trust_remote_code=True; pure block drops need no custom code)."""
    from ..drop import DropPlan, materialize
    from ..errors import RedundancyError
    from ..orders import order_from_cube
    from ._console import console

    if kind is None:
        b = _ints(block)
        plan = DropPlan(_ints(attn) + b, _ints(mlp) + b, "custom")
    elif store is None or dataset is None:
        raise RedundancyError("--kind needs --store and --dataset to read the order from")
    else:
        order = order_from_cube(store, dataset=dataset, kind=kind, strategy=strategy)
        plan = DropPlan.from_order(kind, order, k or 0)
    if not plan.attn and not plan.mlp:
        raise RedundancyError("the plan drops nothing: give --attn/--mlp/--block, "
                              "or --kind with --k and --store")
    path = materialize(checkpoint, plan, out, overwrite)
    console.print(f"{plan.name}: attention {list(plan.attn)}, MLP {list(plan.mlp)} dropped -> {path}")


def _ints(text: str) -> tuple[int, ...]:
    from ..errors import RedundancyError
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise RedundancyError(f"layer lists are comma-separated integers, got {text!r}") from None


@command("evaluate")
def evaluate_(checkpoint: Path = typer.Argument(..., help="a checkpoint folder (dropped or not)",
                                               callback=o.existing),
              preset: Optional[str] = _T("preset"),
              tasks: List[str] = o.TASKS,
              out: Optional[Path] = o.out("results store (zarr) to add the scores to", None, short=False),
              model: Optional[str] = typer.Option(None, help="model name in the results "
                                                  "(default: folder name)"),
              step: Optional[int] = o.count(None, "training step (default: read from the folder as "
                                            "`score local:` reads it)", minimum=0),
              plan: str = typer.Option("baseline", help="plan name in the results, e.g. Attn-4"),
              batch_size: int = _T("eval_batch", "--batch-size"), limit: Optional[int] = _T("limit"),
              device: str = _T("device")) -> None:
    """Evaluate with lm-eval in memory: the study's tasks (paper), the built-in ones, or any names.
    Scores print with lm-eval's standard errors; --out stores both."""
    from .._device import check_device
    from ..drop import load_any
    from ..sources import read_step
    from ..study import evaluate_with_stderr, write_results
    from ..study.chain import check_evaluation
    from ..study.results import check_results_out
    from ._console import console

    check_device(device)
    if out is not None:  # before the evaluation: another kind of store, or an unreadable name, fails at once
        check_results_out(out)
        step = read_step(checkpoint).step if step is None else step  # the step `score local:` files it under
    # before the model is loaded: something to evaluate, the tokenizer, eos and pad ids (task and
    # preset names were checked as the command line was parsed)
    tokenizer = check_evaluation(checkpoint, preset=preset, tasks=tasks)
    lm = load_any(checkpoint).to(device)
    scores, stderr = evaluate_with_stderr(lm, tokenizer, preset=preset or None, tasks=tasks,
                                          batch_size=batch_size, limit=limit)
    for task, value in scores.items():
        console.print(f"{task:<24} {value:.4f} ± {stderr[task]:.4f}")
    if out is not None:
        res = write_results(out, model or checkpoint.resolve().name, step, plan, scores, stderr=stderr)
        console.print(f"average {float(res['average'].sel(plan=plan).max()):.4f}; stored in {out}")


@command()
def quantize(checkpoint: Path = typer.Argument(..., help="a checkpoint folder (dropped or not)",
                                              callback=o.existing),
             out: Path = o.out("folder for the 4-bit checkpoint"),
             method: str = typer.Option("awq", help="awq or gptq (W4A16, through llmcompressor)",
                                        callback=o.one_of("quantization method", o.quant_methods)),
             group_size: int = _T("group_size"),
             calibration: str = typer.Option("prose", help="calibration set"),
             samples: int = _T("quant_samples", "--samples"),
             seq_len: int = o.count(128, "tokens per calibration window (2 or more)", minimum=2),
             overwrite: bool = o.OVERWRITE) -> None:
    """Quantize CHECKPOINT to 4-bit weights; the output reloads like any checkpoint (CPU too)."""
    from ..study.quantize import quantize as quantize_model
    from ._console import console

    path = quantize_model(checkpoint, out, method=method, group_size=group_size, calibration=calibration,
                          n_samples=samples, seq_len=seq_len, overwrite=overwrite)
    console.print(f"{method.upper()} W4A16 (group size {group_size}) -> {path}")


@command()
def study(checkpoint: Path = typer.Argument(..., help="the checkpoint to drop from (e.g. the final step)",
                                           callback=o.existing),
          store: str = o.cube("cube holding its scores (a folder or s3://BUCKET/PATH)", ..., "--store"),
          out: Path = o.out("folder for models, results, table, figure"),
          model: Optional[str] = typer.Option(None, help="model name in the results (default: folder name)"),
          step: Optional[int] = o.count(None, "training step (default: read from the folder)", minimum=0),
          dataset: str = _T("dataset"), order_metric: str = _T("order_metric"), k: List[str] = _T("ks"),
          preset: Optional[str] = _T("preset"), tasks: List[str] = o.TASKS,
          limit: Optional[int] = _T("limit"),
          eval_batch: int = _T("eval_batch"), prompt: Optional[int] = _T("prompt_tokens"),
          new: Optional[int] = _T("new_tokens"), batch: int = _T("speed_batch"), repeats: int = _T("repeats"),
          quant: List[str] = _T("quantize"), quantize_plans: List[str] = _T("quantize_plans"),
          group_size: int = _T("group_size"), quant_samples: int = _T("quant_samples"),
          n_grid: int = _T("n_grid"), device: str = _T("device"), ppl_samples: int = _T("ppl_samples"),
          ppl_seq_len: Optional[int] = _T("ppl_seq_len")) -> None:
    """Drop Attn-k / MLP-k / Block-k / Joint-k, evaluate, time, quantize; print and save Table 1."""
    from ._study import study_command

    s = StudySettings(ks=k, dataset=dataset, order_metric=order_metric, preset=preset, tasks=tasks,
                      limit=limit, eval_batch=eval_batch, prompt_tokens=prompt, new_tokens=new,
                      speed_batch=batch, repeats=repeats, quantize=quant, quantize_plans=quantize_plans,
                      group_size=group_size, quant_samples=quant_samples, n_grid=n_grid, device=device,
                      ppl_samples=ppl_samples, ppl_seq_len=ppl_seq_len)
    study_command(checkpoint, store=store, out=out, settings=s, model=model, step=step)


@command()
def table(results: Path = typer.Argument(..., help="a results store (from study or evaluate --out)"),
          model: Optional[str] = typer.Option(None, help="model in the results (default: the only one)"),
          step: Optional[int] = o.count(None, "training step (default: the model's last)", minimum=0),
          out: Optional[Path] = typer.Option(None, help="save as OUT.csv and OUT.md")) -> None:
    """Print the study's Table 1: task scores, average ± standard error, held-out perplexity, speedup
    with its range, gamma; * under 95% of baseline."""
    from ._study import table_command
    table_command(results, model, step, out)
