"""What the CLI commands do, with progress bars; the CLI itself only parses options."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ._pipeline import DTYPES, Events, ScoreSettings, score_series
from .cube import CubeStore, open_cube
from .errors import RedundancyError, StoreError
from .sources import open_series

console = Console(stderr=True, soft_wrap=True)


def make_settings(datasets: Sequence[str], samples: int, seq_len: int, batch_size: int, seed: int,
                  device: str, dtype: str, layerwise: bool = False, text_field: str = "text",
                  metrics: Sequence[str] = ()) -> ScoreSettings:
    """Validate CLI options into settings; each bad value gets a one-line error."""
    from .calibration import resolve_set

    datasets = list(dict.fromkeys(datasets))
    names = [resolve_set(spec, text_field).name for spec in datasets]  # a missing file fails here
    if len(set(names)) != len(names):
        raise RedundancyError(f"two calibration sets share the name {max(names, key=names.count)!r}; "
                              "rename one of the files")
    if dtype not in DTYPES:
        raise RedundancyError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if samples < 1 or seq_len < 2 or batch_size < 1:
        raise RedundancyError("--samples and --batch-size must be >= 1 and --seq-len >= 2")
    check_device(device)
    from .scoring import DEFAULT_METRICS, METRICS
    for m in metrics:
        METRICS.get(m)  # "did you mean" on a typo
    return ScoreSettings(tuple(dict.fromkeys(datasets)), samples, seq_len, batch_size, seed, device, dtype,
                         metrics=tuple(dict.fromkeys(metrics)) or DEFAULT_METRICS, layerwise=layerwise,
                         text_field=text_field)


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise RedundancyError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RedundancyError(f"--device {device}: this machine has no CUDA GPU torch can use; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RedundancyError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RedundancyError(f"--device {device}: MPS is not available here; use --device cpu")


def check_command(store_path: Path) -> list[str]:
    """Print each damaged cell of a cube and a summary; returns the damaged cells."""
    store = CubeStore.open(store_path)
    cells = store.written_cells() + store.written_cells("orders")
    damaged = [f"{path.relative_to(store.path)}: {what}" for path in cells if (what := store.damage(path))]
    for line in damaged:
        console.print(f"damaged (the next run rescores it): {line}")
    console.print(f"{store_path}: {len(cells) - len(damaged)} cells sound, {len(damaged)} damaged")
    return damaged


def _bars() -> Progress:
    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def score_command(series_spec, out: Path, settings: ScoreSettings, fetcher=None, executor: str = "local",
                  workers: int | None = None) -> Events:
    """Open the series (a spec, `suite:NAME`, a Series or a list of them) and the store, then score
    each with a checkpoint bar and a batch bar; `fetcher` downloads hub checkpoints; executor "ray"
    runs a Ray task per checkpoint."""
    if executor not in ("local", "ray"):
        raise RedundancyError(f"--executor {executor!r} is not one of local, ray")
    store = CubeStore.open(out, settings.calibration())  # refuse a bad --out before any work
    written: list = []
    with _bars() as bars:
        train = bars.add_task("preparing series", total=None)

        def on_train(what: str, done: int, total: int) -> None:
            bars.update(train, description=what, completed=done, total=total)

        serieses = _open_all(series_spec, on_train)
        bars.remove_task(train)
        for series in serieses:
            written += _score_one(series, store, settings, bars, fetcher, executor, workers).written
    total = sum(len(s.checkpoints) for s in serieses) * len(settings.datasets)
    console.print(f"{len(written)} cells written to {out} ({total - len(written)} already there)")
    return Events(written=written)


def _open_all(spec, progress) -> list:
    """The series a spec names: one, or every member of `suite:NAME`."""
    if isinstance(spec, list):
        return spec
    if not isinstance(spec, str):
        return [spec]
    kind, _, name = spec.partition(":")
    if kind == "suite":
        from .sources._suites import SUITES, builtin_suite
        return builtin_suite(SUITES.get(name), progress)
    return [open_series(spec, progress=progress)]


def _score_one(series, store: CubeStore, settings: ScoreSettings, bars: Progress, fetcher, executor: str,
               workers: int | None) -> Events:
    ckpts = bars.add_task(f"checkpoints of {series.model}", total=len(series.checkpoints))
    batch = bars.add_task("samples", total=None)

    def on_ckpt(ckpt, state: str) -> None:
        bars.update(ckpts, description=f"step {ckpt.step} of {series.model}: {state}",
                    advance=int(state != "scoring"))

    def on_dataset(name: str, n: int) -> None:
        bars.reset(batch, total=n, description=f"samples of {name}")

    events = Events(checkpoint=on_ckpt, dataset=on_dataset, batches=lambda n: bars.advance(batch, n),
                    log=lambda msg: bars.console.print(msg))
    if executor == "ray":  # per-batch progress stays in the workers: checkpoints only
        from ._ray import score_series_ray

        bars.remove_task(batch)
        score_series_ray(series, store.path, settings, events, fetcher=fetcher, num_workers=workers)
    else:
        score_series(series, store, settings, events, fetcher)
        bars.remove_task(batch)
    return events


def _open_with(store_path: Path, metric: str):
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, whatever the environment
    cube = open_cube(store_path)
    if metric not in cube:
        raise StoreError(f"metric {metric!r} is not in {store_path}; it holds {', '.join(cube.data_vars)}")
    return cube


def heatmaps(store_path: Path, out: Path, metric: str = "importance") -> list[Path]:
    """One heatmap figure (PNG and PDF) per model and dataset of the cube."""
    import analyses

    return analyses.heatmaps(_open_with(store_path, metric), out, metric)


def figures(store_path: Path, out: Path, metric: str = "importance") -> list[Path]:
    """Every figure of the study for every model in the cube."""
    import analyses

    return analyses.draw_all(_open_with(store_path, metric), out, metric)


def order_command(series_spec: str, store_path: Path, settings_args: dict, steps: list[int],
                  modules: list[str], metric: str) -> list:
    """Iterative and one-shot orders for the chosen steps, with the store's calibration settings."""
    from ._orders import order_series
    from .scoring import METRICS, MODULES

    for m in modules:
        if m not in MODULES:
            raise RedundancyError(f"--module {m!r} is not one of {', '.join(MODULES)}")
    METRICS.get(metric)
    stored = CubeStore.open(store_path).settings()
    settings = make_settings(samples=stored["n_samples"], seq_len=stored["seq_len"], seed=stored["seed"],
                             **settings_args)
    store = CubeStore.open(store_path, settings.calibration())
    series = open_series(series_spec)
    events = Events(log=lambda msg: console.print(msg))
    written = order_series(series, store, settings, steps, modules, metric, events)
    console.print(f"{len(written)} order cells written to {store_path}")
    return written


# The study chain on builtin:tiny's final step: a few k per kind; prompt + new tokens fit its
# 256-token context (the study times 2048 + 2048).
DEMO_STUDY = dict(ks={"attn": [2, 4, 6], "mlp": [2, 4], "block": [2, 4], "joint": [4]}, prompt_tokens=128,
                  new_tokens=64, speed_batch=4, repeats=5, quant_samples=32, n_grid=10, ppl_samples=32)


def demo(out: Path) -> None:
    """builtin:tiny -> cube on prose, code and math -> iterative orders -> every figure -> the study
    chain (drop, evaluate, time, quantize, Table 1, accuracy curves), under `out`."""
    import numpy as np

    import analyses
    from .sources._tiny import build_tiny_series

    settings = ScoreSettings()
    score_command("builtin:tiny", out / "cube.zarr", settings)
    order_command("builtin:tiny", out / "cube.zarr", dict(datasets=settings.datasets, batch_size=settings.batch_size,
                  device=settings.device, dtype=settings.dtype), [], ["block", "attn", "mlp"], "importance")
    made = figures(out / "cube.zarr", out / "figures")
    cube = open_cube(out / "cube.zarr").isel(step=-1).sel(model="builtin:tiny")
    for dataset in cube["dataset"].values:
        agreement = analyses.strategy_agreement(cube["drop_order"].sel(dataset=dataset))
        console.print(f"one-shot vs iterative on {dataset}:\n" + analyses.describe(agreement))
    curve = json.loads((build_tiny_series() / "series.json").read_text())["loss_curve"]
    arr = {k: np.array([c[k] for c in curve]) for k in ("step", "tokens", "loss")}
    fig = analyses.loss_curve(arr["step"], arr["tokens"], arr["loss"], title="builtin:tiny training loss")
    made += analyses.save(fig, out / "figures" / "loss_curve")
    made += _demo_study(out)
    made += _demo_suite(out)
    made += _demo_proxy(out)
    console.print(f"cube: {out / 'cube.zarr'}  (open with redundancy.open_cube)")
    console.print(f"suite: {out / 'suite.zarr'}  (3 seeds; notebooks/seeds.ipynb)")
    console.print(f"results: {out / 'study' / 'results.zarr'}  (open with redundancy.open_results)")
    for p in made:
        console.print(f"figure: {p}")


def _demo_study(out: Path) -> list[Path]:
    from ._run_study import study_command
    from .study import StudySettings

    final = open_series("builtin:tiny").checkpoints[-1]
    console.print(f"study chain on builtin:tiny step {final.step}, orders from prose")
    study_command(Path(final.path), out / "cube.zarr", "prose", out / "study", StudySettings(**DEMO_STUDY),
                  "builtin:tiny", final.step)
    return sorted((out / "study" / "figures").glob("*.p*"))


def _demo_proxy(out: Path) -> list[Path]:
    """Proxy against truth on builtin:tiny: cosine importance, exact ablation (loss_delta, kl) and its
    first-order estimate at three steps (first, middle, last), on prose; the scatter at the final step
    and the agreement over the steps."""
    import analyses
    from .sources import Series

    series = open_series("builtin:tiny")
    ckpts = series.checkpoints
    steps = [ckpts[0], ckpts[len(ckpts) // 2], ckpts[-1]]
    settings = ScoreSettings(datasets=("prose",), metrics=("importance", "loss_delta", "kl", "loss_delta_grad"))
    score_command(Series(series.model, steps), out / "proxy.zarr", settings)
    cube = open_cube(out / "proxy.zarr").sel(model="builtin:tiny", dataset="prose")
    final = cube.isel(step=-1)
    made = analyses.save(analyses.proxy_scatter(final, title=f"builtin:tiny step {int(final.step)}: cosine "
                                                "importance vs loss increase when dropped, prose"),
                         out / "figures" / "proxy_vs_truth_builtin-tiny")
    fig = analyses.agreement_over_steps(cube, [("importance", "loss_delta"), ("loss_delta_grad", "loss_delta")],
                                        title="builtin:tiny, attention: proxies against the measured loss, prose")
    return made + analyses.save(fig, out / "figures" / "proxy_agreement_builtin-tiny")


def _demo_suite(out: Path) -> list[Path]:
    """Three seeds of a small builtin:tiny in one cube, and their importance band at the last steps."""
    import analyses

    score_command("suite:tiny-seeds", out / "suite.zarr", ScoreSettings(datasets=("prose",), n_samples=16, seq_len=64))
    imp = open_cube(out / "suite.zarr").importance.sel(dataset="prose").mean("sample")
    steps = [int(imp.step[1]), int(imp.step[-1])]
    fig = analyses.seed_band(imp, steps, title="tiny-seeds: importance per layer across 3 seeds, calibration set prose")
    return analyses.save(fig, out / "figures" / "seed_band_tiny-seeds")


def list_command(repo: str, hub_args: dict) -> list[str]:
    """The table `redundancy list` prints; no weights are downloaded."""
    from .sources._crawl import hub_series, table

    return table(hub_series(repo, **hub_args).checkpoints)


def crawl_command(repo: str | None, out: Path, settings: ScoreSettings, hub_args: dict, cache_dir: Path | None,
                  keep: bool, tokenizer: str | None, executor: str = "local", workers: int | None = None,
                  suite: str | None = None) -> Events:
    """List, select, then download-and-score each checkpoint into the cube (resumable); with
    `suite` (a registered name or repos joined by commas), every member into one cube."""
    if (repo is None) == (suite is None):
        raise RedundancyError("give a repo, or --suite NAME (or --suite REPO1,REPO2,... with --preset), not both")
    from .sources._crawl import fetcher, hub_series, report

    CubeStore.open(out, settings.calibration())  # a bad --out fails before any network call
    if suite is not None:
        from .sources._suites import hub_suite, suite_from
        serieses = hub_suite(suite_from(suite, hub_args.pop("preset")), **hub_args)
    else:
        serieses = [hub_series(repo, **hub_args)]
    for series in serieses:
        dups = sum(c.duplicate_of is not None for c in series.checkpoints)
        console.print(f"{series.model}: {len(series.checkpoints)} checkpoints selected "
                      f"({dups} byte-identical to another)")
        for line in report(series.checkpoints):
            console.print(line)
    return score_command(serieses, out, settings,
                         fetcher(cache_dir, hub_args.get("token"), hub_args.get("endpoint"), keep, tokenizer),
                         executor, workers)


def drop_command(checkpoint: Path, out: Path, attn: str, mlp: str, block: str, kind: str | None, k: int | None,
                 store: Path | None, dataset: str | None, strategy: str, overwrite: bool = False) -> Path:
    """Materialize a plan given as lists, or as the first k of an order stored in a cube."""
    from .drop import DropPlan, materialize

    def ints(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise RedundancyError(f"layer lists are comma-separated integers, got {text!r}") from None

    if kind is None:
        b = ints(block)
        plan = DropPlan(ints(attn) + b, ints(mlp) + b, "custom")
    else:
        plan = DropPlan.from_order(kind, _stored_order(store, dataset, kind, strategy), k or 0)
    if not plan.attn and not plan.mlp:
        raise RedundancyError("the plan drops nothing: give --attn/--mlp/--block, or --kind with --k and --store")
    path = materialize(checkpoint, plan, out, overwrite)
    console.print(f"{plan.name}: attention {list(plan.attn)}, MLP {list(plan.mlp)} dropped -> {path}")
    return path


def _stored_order(store: Path | None, dataset: str | None, kind: str, strategy: str, metric: str = "importance"):
    """The order of the cube's last scored step (one model, one dataset)."""
    import analyses

    if store is None or dataset is None:
        raise RedundancyError("--kind needs --store and --dataset to read the order from")
    cube = open_cube(store)
    if cube.sizes["model"] != 1:
        raise RedundancyError(f"{store} holds several models; score the one you drop into its own store")
    m = analyses.report.final_step(cube, cube["model"].values[0]).sel(dataset=dataset)
    if metric not in m:
        raise RedundancyError(f"{store} holds no {metric}; score it with --metric {metric}")
    if kind == "joint":
        j = analyses.joint_order(m[metric].mean("sample"))
        return [(str(a), int(b)) for a, b in zip(j["module"].values, j["layer"].values) if b >= 0]
    if strategy == "iterative":
        if "drop_order" not in m:
            raise RedundancyError(f"{store} holds no iterative orders: run `redundancy order` first")
        order = m["drop_order"].sel(strategy="iterative", module=kind).values
    else:
        order = analyses.drop_order(m.sel(module=kind), metric=metric).values
    return [int(x) for x in order if x >= 0]


def evaluate_command(checkpoint: Path, preset: str | None, tasks: list[str], out: Path | None, model_name: str | None,
                     step: int | None, plan: str, batch_size: int, limit: int | None, device: str) -> dict:
    """lm-eval on a (dropped or not) checkpoint; scores printed and, with --out, stored."""
    from ._run_study import checkpoint_step
    from .drop import load_any
    from .evaluate import evaluate_with_stderr
    from .results import write_results
    from .sources._load import load_tokenizer

    check_device(device)
    if batch_size < 1 or (limit is not None and limit < 1):
        raise RedundancyError("--batch-size and --limit must be at least 1")
    model = load_any(checkpoint).to(device)
    scores, stderr = evaluate_with_stderr(model, load_tokenizer(checkpoint), preset, tasks, batch_size, limit)
    for task, value in scores.items():
        console.print(f"{task:<24} {value:.4f} ± {stderr[task]:.4f}")
    if out is not None:
        step = step if step is not None else checkpoint_step(checkpoint)
        res = write_results(out, model_name or checkpoint.resolve().name, step, plan, scores, stderr=stderr)
        console.print(f"average {float(res['average'].sel(plan=plan).max()):.4f}; stored in {out}")
    return scores
