"""The `redundancy` command: thin, every step is a library call."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import click
import typer

from .errors import RedundancyError, one_line

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure how redundant each block, attention and MLP layer is, across training.")


_DEBUG = {"on": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the full traceback of a failure")) -> None:
    """Measure how redundant each block, attention and MLP layer is, across training."""
    _DEBUG["on"] = debug


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(1)


def command(name: str | None = None) -> Callable[[Callable], Callable]:
    """`app.command`, with any failure, whoever raised it, printed as one red line and exit code 1
    (the traceback with --debug)."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)  # typer reads the options from the wrapped signature
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.ClickException):
                raise
            except KeyboardInterrupt:
                _fail("interrupted; finished cells and rows are kept: run the same command again to resume")
            except Exception as exc:  # noqa: BLE001 - every failure reaches the user as one line
                if _DEBUG["on"]:
                    raise
                _fail(one_line(exc))
        return app.command(name)(run)
    return register


@command()
def score(series: str = typer.Argument(..., help="builtin:tiny, local:DIR (one checkpoint per step), or "
                                       "suite:tiny-seeds (three seeds of a small builtin:tiny)"),
          out: Path = typer.Option(..., "--out", "-o", help="cube store (zarr folder) to write into"),
          datasets: List[str] = typer.Option(["prose", "code", "math"], "--dataset", "-d",
                                             help="calibration set: a name (`redundancy datasets`), a file or "
                                             "folder (.jsonl .json .parquet .csv .txt), or "
                                             "hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]; repeat for several"),
          text_field: str = typer.Option("text", help="the field holding the text in files and hub rows"),
          metrics: List[str] = typer.Option([], "--metric", help="metrics to store (repeat); default: importance, "
                                            "importance_no_residual, angular_distance, relative_magnitude; "
                                            "exact ablation: loss_delta, kl; first-order estimate: loss_delta_grad"),
          samples: int = typer.Option(32, help="calibration windows per set"),
          seq_len: int = typer.Option(128, help="tokens per window"),
          batch_size: int = typer.Option(8, help="windows per forward pass"),
          seed: int = typer.Option(0, help="seed choosing the windows"),
          device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
          dtype: str = typer.Option("float32", help="float32, bfloat16 or float16"),
          layerwise: bool = typer.Option(False, help="one decoder layer on the device at a time "
                                         "(models larger than the device)"),
          executor: str = typer.Option("local", help="local (this process) or ray (a task per checkpoint)"),
          workers: Optional[int] = typer.Option(None, help="with --executor ray: checkpoints scored at once "
                                                "(default: as many as the CPUs or GPUs allow)")) -> None:
    """Score every checkpoint of SERIES on every calibration set; finished cells are skipped."""
    from . import _run
    _run.score_command(series, out, _run.make_settings(datasets, samples, seq_len, batch_size, seed,
                                                       device, dtype, layerwise, text_field, metrics),
                       executor=executor, workers=workers)


@command()
def heatmap(store: Path = typer.Argument(..., help="a cube store"),
            out: Optional[Path] = typer.Option(None, help="folder for the figures (default STORE/../figures)"),
            metric: str = typer.Option("importance", help="metric variable to draw")) -> None:
    """Draw step x layer heatmaps per module, layer 0 apart, one figure per model and dataset."""
    from . import _run
    for path in _run.heatmaps(store, out or store.parent / "figures", metric):
        typer.echo(path)


@command()
def figures(store: Path = typer.Argument(..., help="a cube store"),
            out: Path = typer.Option(..., "--out", "-o", help="folder for the figures"),
            metric: str = typer.Option("importance", help="metric variable to draw")) -> None:
    """Draw every figure: heatmaps, per-layer lines, order grids, sample counts, dataset agreement,
    one-shot vs iterative (where orders are stored)."""
    from . import _run
    paths = _run.figures(store, out, metric)
    typer.echo(f"{len(paths)} files in {out}")


@command()
def order(series: str = typer.Argument(..., help="the series the store was scored from"),
          out: Path = typer.Option(..., "--out", "-o", help="the cube store"),
          iterative: bool = typer.Option(True, help="also compute the iterative order (drop, re-score)"),
          steps: List[int] = typer.Option([], "--step", help="steps to order (default: the last)"),
          datasets: List[str] = typer.Option(["prose", "code", "math"], "--dataset", "-d"),
          modules: List[str] = typer.Option(["block", "attn", "mlp"], "--module"),
          metric: str = typer.Option("importance"),
          batch_size: int = typer.Option(8), device: str = typer.Option("cpu"),
          dtype: str = typer.Option("float32")) -> None:
    """Store one-shot and iterative dropping orders next to the scores (variable drop_order)."""
    from . import _run
    if not iterative:
        raise RedundancyError("one-shot orders need no model: use analyses.drop_order on the cube")
    _run.order_command(series, out, dict(datasets=datasets, batch_size=batch_size, device=device,
                                         dtype=dtype), steps, modules, metric)


@command()
def demo(out: Path = typer.Option(Path("out/demo"), help="folder for the cube and figures")) -> None:
    """Train the built-in series (cached), score it on three built-in sets, draw its figures, then
    drop, evaluate, time and quantize its final step (Table 1 and accuracy curve)."""
    from . import _run
    _run.demo(out)


@command()
def drop(checkpoint: Path = typer.Argument(..., help="a Hugging Face checkpoint folder"),
         out: Path = typer.Option(..., "--out", "-o", help="folder for the dropped checkpoint"),
         attn: str = typer.Option("", help="attention layers to drop, e.g. 3,5,7"),
         mlp: str = typer.Option("", help="MLP layers to drop"),
         block: str = typer.Option("", help="whole layers to drop"),
         kind: Optional[str] = typer.Option(None, help="attn, mlp, block or joint: take the order from --store"),
         k: Optional[int] = typer.Option(None, help="how many to drop (with --kind)"),
         store: Optional[Path] = typer.Option(None, help="cube holding the scores (with --kind)"),
         dataset: Optional[str] = typer.Option(None, help="calibration set whose order to use"),
         strategy: str = typer.Option("one-shot", help="one-shot or iterative (stored by `redundancy order`)"),
         overwrite: bool = typer.Option(False, help="replace an existing non-empty --out")) -> None:
    """Write CHECKPOINT without the dropped modules: loads with AutoModelForCausalLM
    (trust_remote_code=True; pure block drops need no custom code)."""
    from . import _run
    _run.drop_command(checkpoint, out, attn, mlp, block, kind, k, store, dataset, strategy, overwrite)


@command("evaluate")
def evaluate_(checkpoint: Path = typer.Argument(..., help="a checkpoint folder (dropped or not)"),
              preset: Optional[str] = typer.Option("builtin", help="paper or builtin; '' for none"),
              tasks: List[str] = typer.Option([], "--task", help="more lm-eval task names"),
              out: Optional[Path] = typer.Option(None, help="results store (zarr) to add the scores to"),
              model: Optional[str] = typer.Option(None, help="model name in the results (default: folder name)"),
              step: Optional[int] = typer.Option(None, help="training step (default: checkpoint.json)"),
              plan: str = typer.Option("baseline", help="plan name in the results, e.g. Attn-4"),
              batch_size: int = typer.Option(16), limit: Optional[int] = typer.Option(None),
              device: str = typer.Option("cpu")) -> None:
    """Evaluate with lm-eval in memory: the study's tasks (paper), the built-in ones, or any names."""
    from . import _run
    _run.evaluate_command(checkpoint, preset or None, tasks, out, model, step, plan, batch_size, limit, device)


def _hub_args(preset, pattern, tokens_per_step, every, steps, max_n, token, endpoint, stages=None) -> dict:
    return dict(preset=preset, pattern=pattern, tokens_per_step=tokens_per_step, every=every,
                steps=steps or None, max_n=max_n, token=token, endpoint=endpoint, stages=stages or None)


PRESET = typer.Option(None, help="a name from data/series_presets.yaml: pythia, olmo, olmo2, olmo3, smollm3, "
                      "map-neo, tinyllama, ...")
STAGE = typer.Option([], "--stage", help="training stages to keep (multi-stage histories; repeat)")
PATTERN = typer.Option(None, help="regex with (?P<step>...) for names no preset knows")
TPS = typer.Option(None, "--tokens-per-step", help="tokens per step when names do not say")
EVERY = typer.Option(None, help="token grid, e.g. 500B: the checkpoint nearest each point")
STEPS = typer.Option([], "--step", help="exact steps (repeat)")
MAXN = typer.Option(None, "--max", help="at most N checkpoints, evenly spread")
TOKEN = typer.Option(None, envvar="HF_TOKEN", help="hub token for gated or private repos")
ENDPOINT = typer.Option(None, envvar="HF_ENDPOINT", hidden=True)


@command("list")
def list_(repo: str = typer.Argument(..., help="hub repo id, e.g. EleutherAI/pythia-160m; with one repo per step "
                                     "(tinyllama) an author, or repo ids joined by commas"),
          preset: Optional[str] = PRESET, pattern: Optional[str] = PATTERN,
          tokens_per_step: Optional[float] = TPS, every: Optional[str] = EVERY,
          steps: List[int] = STEPS, max_n: Optional[int] = MAXN, token: Optional[str] = TOKEN,
          endpoint: Optional[str] = ENDPOINT, stages: List[str] = STAGE) -> None:
    """List a hub repo's checkpoints (step, tokens, revision, commit, size) and their integrity flags:
    duplicates, partial duplicates, steps identical to the final, config drift, missing tokenizers.
    Downloads no weights."""
    from . import _run
    for line in _run.list_command(repo, _hub_args(preset, pattern, tokens_per_step, every, steps,
                                                  max_n, token, endpoint, stages)):
        typer.echo(line)


@command()
def crawl(repo: Optional[str] = typer.Argument(None, help="hub repo id (or an author, or repos joined by commas, "
                                               "for one repo per step)"),
          out: Path = typer.Option(..., "--out", "-o", help="cube store"),
          preset: Optional[str] = PRESET, pattern: Optional[str] = PATTERN,
          tokens_per_step: Optional[float] = TPS, every: Optional[str] = EVERY,
          steps: List[int] = STEPS, max_n: Optional[int] = MAXN, token: Optional[str] = TOKEN,
          endpoint: Optional[str] = ENDPOINT, stages: List[str] = STAGE,
          datasets: List[str] = typer.Option(["c4"], "--dataset", "-d", help="calibration set, as for score"),
          text_field: str = typer.Option("text", help="the field holding the text in files and hub rows"),
          samples: int = typer.Option(256), seq_len: int = typer.Option(2048),
          batch_size: int = typer.Option(4), seed: int = typer.Option(0),
          device: str = typer.Option("cpu"), dtype: str = typer.Option("bfloat16"),
          cache_dir: Optional[Path] = typer.Option(None, help="hub cache (default: HF_HUB_CACHE)"),
          keep: bool = typer.Option(False, help="keep each checkpoint in the cache after scoring"),
          tokenizer: Optional[str] = typer.Option(None, help="tokenizer repo or folder: for Megatron histories, and revisions uploaded without one"),
          layerwise: bool = typer.Option(False, help="one decoder layer on the device at a time"),
          executor: str = typer.Option("local", help="local or ray (a task per checkpoint: download and score)"),
          workers: Optional[int] = typer.Option(None, help="with --executor ray: checkpoints at once"),
          suite: Optional[str] = typer.Option(None, help="a suite of seeds into one cube: polypythia-160m, "
                                              "crfm-gpt2-small, or repos joined by commas (with --preset)")) -> None:
    """Score the selected checkpoints of a hub history (or of every run of a suite) into the cube;
    finished steps are skipped."""
    from . import _run
    settings = _run.make_settings(datasets, samples, seq_len, batch_size, seed, device, dtype, layerwise, text_field)
    _run.crawl_command(repo, out, settings, _hub_args(preset, pattern, tokens_per_step, every, steps,
                                                      max_n, token, endpoint, stages), cache_dir, keep, tokenizer,
                       executor, workers, suite)


@command()
def quantize(checkpoint: Path = typer.Argument(..., help="a checkpoint folder (dropped or not)"),
             out: Path = typer.Option(..., "--out", "-o", help="folder for the 4-bit checkpoint"),
             method: str = typer.Option("awq", help="awq or gptq (W4A16, through llmcompressor)"),
             group_size: int = typer.Option(128, help="weights per scale; must divide every layer width"),
             calibration: str = typer.Option("prose", help="calibration set"),
             samples: int = typer.Option(64), seq_len: int = typer.Option(128),
             overwrite: bool = typer.Option(False, help="replace an existing non-empty --out")) -> None:
    """Quantize CHECKPOINT to 4-bit weights; the output reloads like any checkpoint (CPU too)."""
    from . import _run_study
    _run_study.quantize_command(checkpoint, out, method, group_size, calibration, samples, seq_len, overwrite)


def _ks(specs: List[str]) -> dict[str, list[int]]:
    """['attn=2,4', 'block=4'] -> {'attn': [2, 4], 'block': [4]}."""
    out = {}
    for spec in specs:
        kind, _, counts = spec.partition("=")
        if kind not in ("attn", "mlp", "block", "joint") or not counts:
            raise RedundancyError(f"--k {spec!r}: write KIND=K1,K2 with KIND attn, mlp, block or joint")
        try:
            out[kind] = [int(k) for k in counts.split(",")]
        except ValueError:
            raise RedundancyError(f"--k {spec!r}: counts are comma-separated integers, e.g. attn=4,8") from None
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
          group_size: int = typer.Option(128), device: str = typer.Option("cpu"),
          model: Optional[str] = typer.Option(None), step: Optional[int] = typer.Option(None),
          order_metric: str = typer.Option("importance", help="the metric whose order picks the plans, e.g. "
                                            "loss_delta (scored with --metric loss_delta)"),
          repeats: int = typer.Option(5, help="timed generations per model (their spread decides noise)"),
          ppl_samples: int = typer.Option(64, help="held-out windows per calibration set of the cube for "
                                          "perplexity (0: none)"),
          ppl_seq_len: Optional[int] = typer.Option(None, help="their length (default: the cube's seq_len)")) -> None:
    """Drop Attn-k / MLP-k / Block-k / Joint-k, evaluate, time, quantize; print and save Table 1."""
    from . import _run_study
    from .study import StudySettings
    if repeats < 2 or ppl_samples < 0:
        raise RedundancyError("--repeats must be at least 2 (a spread needs two timings), --ppl-samples at least 0")
    s = StudySettings(_ks(k), preset or None, tasks, limit, prompt_tokens=prompt, new_tokens=new,
                      speed_batch=batch, repeats=repeats, quantize=quant, group_size=group_size, device=device,
                      ppl_samples=ppl_samples, ppl_seq_len=ppl_seq_len)
    _run_study.study_command(checkpoint, store, dataset, out, s, model or checkpoint.resolve().name,
                             step if step is not None else _run_study.checkpoint_step(checkpoint), order_metric)


@command()
def table(results: Path = typer.Argument(..., help="a results store (from study or evaluate --out)"),
          model: Optional[str] = typer.Option(None), step: Optional[int] = typer.Option(None),
          out: Optional[Path] = typer.Option(None, help="save as OUT.csv and OUT.md")) -> None:
    """Print the study's Table 1: task scores, average, % of baseline, speedup, gamma; * under 95%."""
    from . import _run_study
    _run_study.table_command(results, model, step, out)


@command()
def datasets() -> None:
    """Every registered calibration set: name, source, offline or not, description. Besides these,
    -d takes a local file or folder, or hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]."""
    from .calibration import CALIBRATION_SETS
    sets = [CALIBRATION_SETS.get(name) for name in CALIBRATION_SETS.names()]
    _print_table("calibration sets", ["name", "source", "offline", "description"],
                 [[cs.name, cs.source, "yes" if cs.offline else "no", cs.description] for cs in sets])


@command()
def families() -> None:
    """The family table: model type, residual form, where each module's output joins the residual,
    and whether layer-by-layer scoring supports it."""
    from .families import table_rows
    rows = table_rows()
    _print_table("families (read from config.model_type)", list(rows[0]), [list(r.values()) for r in rows])


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table on stdout, its cells printed as written (no rich markup or :emoji: codes)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True, emoji=False, markup=False).print(table)


@command()
def check(store: Path = typer.Argument(..., help="a cube store")) -> None:
    """Verify every cell of a cube (files present, sizes as written); list what a run would rescore.
    Exit code 1 when a cell is damaged."""
    from . import _run
    damaged = _run.check_command(store)
    if damaged:
        raise typer.Exit(1)


if __name__ == "__main__":
    sys.exit(app())
