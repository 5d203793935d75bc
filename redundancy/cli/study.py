"""The post-drop commands: `drop`, `evaluate`, `quantize`, `study` (all of them on a plan grid) and
`table` (Table 1 from a results store)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import _options as o
from ._app import command


@command()
def drop(checkpoint: Path = typer.Argument(..., help="a Hugging Face checkpoint folder"),
         out: Path = typer.Option(..., "--out", "-o", help="folder for the dropped checkpoint"),
         attn: str = typer.Option("", help="attention layers to drop, e.g. 3,5,7"),
         mlp: str = typer.Option("", help="MLP layers to drop"),
         block: str = typer.Option("", help="whole layers to drop"),
         kind: Optional[str] = typer.Option(None, help="attn, mlp, block or joint: "
                                            "take the order from --store"),
         k: Optional[int] = typer.Option(None, help="how many to drop (with --kind)"),
         store: Optional[Path] = typer.Option(None, help="cube holding the scores (with --kind)"),
         dataset: Optional[str] = typer.Option(None, help="calibration set whose order to use"),
         strategy: str = typer.Option("one-shot", help="one-shot or iterative "
                                      "(stored by `redundancy order`)"),
         overwrite: bool = o.OVERWRITE) -> None:
    """Write CHECKPOINT without the dropped modules: loads with AutoModelForCausalLM
    (trust_remote_code=True; pure block drops need no custom code)."""
    from ..drop import DropPlan, materialize
    from ..errors import RedundancyError
    from ._console import console
    from ._study import stored_order

    if kind is None:
        b = _ints(block)
        plan = DropPlan(_ints(attn) + b, _ints(mlp) + b, "custom")
    else:
        plan = DropPlan.from_order(kind, stored_order(store, dataset, kind, strategy), k or 0)
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
def evaluate_(checkpoint: Path = typer.Argument(..., help="a checkpoint folder (dropped or not)"),
              preset: Optional[str] = typer.Option("builtin", help="paper or builtin; '' for none"),
              tasks: List[str] = typer.Option([], "--task", help="more lm-eval task names"),
              out: Optional[Path] = typer.Option(None, help="results store (zarr) to add the scores to"),
              model: Optional[str] = typer.Option(None, help="model name in the results "
                                                  "(default: folder name)"),
              step: Optional[int] = typer.Option(None, help="training step (default: read from the "
                                                 "folder as `score local:` reads it)"),
              plan: str = typer.Option("baseline", help="plan name in the results, e.g. Attn-4"),
              batch_size: int = typer.Option(16), limit: Optional[int] = typer.Option(None),
              device: str = o.DEVICE) -> None:
    """Evaluate with lm-eval in memory: the study's tasks (paper), the built-in ones, or any names.
    Scores print with lm-eval's standard errors; --out stores both."""
    from .._device import check_device
    from ..drop import load_any
    from ..errors import RedundancyError
    from ..sources import read_step
    from ..sources._load import load_tokenizer
    from ..study import evaluate_with_stderr, write_results
    from ._console import console

    check_device(device)
    if batch_size < 1 or (limit is not None and limit < 1):
        raise RedundancyError("--batch-size and --limit must be at least 1")
    if out is not None and step is None:  # before the evaluation: an unreadable name fails at once
        step = read_step(checkpoint).step  # the step `score local:` files this folder under
    lm = load_any(checkpoint).to(device)
    scores, stderr = evaluate_with_stderr(lm, load_tokenizer(checkpoint), preset or None, tasks,
                                          batch_size, limit)
    for task, value in scores.items():
        console.print(f"{task:<24} {value:.4f} ± {stderr[task]:.4f}")
    if out is not None:
        res = write_results(out, model or checkpoint.resolve().name, step, plan, scores, stderr=stderr)
        console.print(f"average {float(res['average'].sel(plan=plan).max()):.4f}; stored in {out}")


@command()
def quantize(checkpoint: Path = typer.Argument(..., help="a checkpoint folder (dropped or not)"),
             out: Path = typer.Option(..., "--out", "-o", help="folder for the 4-bit checkpoint"),
             method: str = typer.Option("awq", help="awq or gptq (W4A16, through llmcompressor)"),
             group_size: int = typer.Option(128, help="weights per scale; must divide every layer width"),
             calibration: str = typer.Option("prose", help="calibration set"),
             samples: int = typer.Option(64), seq_len: int = typer.Option(128),
             overwrite: bool = o.OVERWRITE) -> None:
    """Quantize CHECKPOINT to 4-bit weights; the output reloads like any checkpoint (CPU too)."""
    from ..errors import RedundancyError
    from ..study import quantize as quantize_model
    from ._console import console

    if method not in ("awq", "gptq"):
        raise RedundancyError(f"--method {method!r} is not one of awq, gptq")
    path = quantize_model(checkpoint, out, method, group_size, calibration, samples, seq_len,
                          overwrite=overwrite)
    console.print(f"{method.upper()} W4A16 (group size {group_size}) -> {path}")


def _ks(specs: List[str]) -> dict[str, list[int]]:
    """['attn=2,4', 'block=4'] -> {'attn': [2, 4], 'block': [4]}."""
    from ..errors import RedundancyError

    out = {}
    for spec in specs:
        kind, _, counts = spec.partition("=")
        if kind not in ("attn", "mlp", "block", "joint") or not counts:
            raise RedundancyError(f"--k {spec!r}: write KIND=K1,K2 with KIND attn, mlp, block or joint")
        try:
            out[kind] = [int(k) for k in counts.split(",")]
        except ValueError:
            raise RedundancyError(f"--k {spec!r}: counts are comma-separated integers, "
                                  "e.g. attn=4,8") from None
        if min(out[kind]) < 1:
            raise RedundancyError(f"--k {spec!r}: every count must be at least 1")
    return out


@command()
def study(checkpoint: Path = typer.Argument(..., help="the checkpoint to drop from (e.g. the final step)"),
          store: Path = typer.Option(..., help="cube holding its scores"),
          dataset: str = typer.Option("prose", help="calibration set whose orders to use"),
          out: Path = typer.Option(..., "--out", "-o", help="folder for models, results, table, figure"),
          k: List[str] = typer.Option(["attn=2,4,6", "mlp=2,4,6", "block=2,4,6", "joint=4,8"],
                                      help="plans, e.g. attn=4,8; repeat per kind"),
          preset: Optional[str] = typer.Option("builtin"), tasks: List[str] = typer.Option([], "--task"),
          limit: Optional[int] = typer.Option(None), prompt: int = typer.Option(2048),
          new: int = typer.Option(2048), batch: int = typer.Option(1),
          quant: List[str] = typer.Option(["awq", "gptq"], help="4-bit methods for the largest Attn-k"),
          group_size: int = typer.Option(128), device: str = o.DEVICE,
          model: Optional[str] = typer.Option(None), step: Optional[int] = typer.Option(None),
          order_metric: str = typer.Option("importance", help="the metric whose order picks the plans, e.g. "
                                            "loss_delta (scored with --metric loss_delta)"),
          repeats: int = typer.Option(5, help="timed generations per model (their spread decides noise)"),
          ppl_samples: int = typer.Option(64, help="held-out windows per calibration set of the cube for "
                                          "perplexity (0: none)"),
          ppl_seq_len: Optional[int] = typer.Option(None, help="their length "
                                                    "(default: the cube's seq_len)")) -> None:
    """Drop Attn-k / MLP-k / Block-k / Joint-k, evaluate, time, quantize; print and save Table 1."""
    from ..errors import RedundancyError
    from ..sources import read_step
    from ..study import StudySettings
    from ._study import study_command

    if repeats < 2 or ppl_samples < 0:
        raise RedundancyError("--repeats must be at least 2 (a spread needs two timings), "
                              "--ppl-samples at least 0")
    s = StudySettings(_ks(k), preset or None, tasks, limit, prompt_tokens=prompt, new_tokens=new,
                      speed_batch=batch, repeats=repeats, quantize=quant, group_size=group_size,
                      device=device, ppl_samples=ppl_samples, ppl_seq_len=ppl_seq_len)
    study_command(checkpoint, store, dataset, out, s, model or checkpoint.resolve().name,
                  step if step is not None else read_step(checkpoint).step,  # the cube's step of it
                  order_metric)


@command()
def table(results: Path = typer.Argument(..., help="a results store (from study or evaluate --out)"),
          model: Optional[str] = typer.Option(None), step: Optional[int] = typer.Option(None),
          out: Optional[Path] = typer.Option(None, help="save as OUT.csv and OUT.md")) -> None:
    """Print the study's Table 1: task scores, average ± standard error, held-out perplexity, speedup
    with its range, gamma; * under 95% of baseline."""
    from ._study import table_command
    table_command(results, model, step, out)
