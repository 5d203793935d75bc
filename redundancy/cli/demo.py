"""`demo`: everything the toolkit does, on builtin:tiny, on this machine (CPU, offline)."""
from __future__ import annotations

import json
from pathlib import Path

from . import _options as o
from ._app import command


@command()
def demo(out: Path = o.out("folder for the cube and figures", Path("out/demo"), short=False)) -> None:
    """Train the built-in series (cached), score it on three built-in sets, draw its figures, then
    drop, evaluate, time and quantize its final step (Table 1 and accuracy curve)."""
    from ._console import console

    made = _demo_cube(out) + _demo_study(out) + _demo_suite(out) + _demo_proxy(out)
    console.print(f"cube: {out / 'cube.zarr'}  (open with redundancy.open_cube)")
    console.print(f"suite: {out / 'suite.zarr'}  (3 seeds; notebooks/seeds.ipynb)")
    console.print(f"results: {out / 'study' / 'results.zarr'}  (open with redundancy.open_results)")
    for p in made:
        console.print(f"figure: {p}")


def _demo_cube(out: Path) -> list[Path]:
    """builtin:tiny -> cube on prose, code and math -> iterative orders -> every figure, loss curve."""
    import numpy as np

    import analyses

    from ..cube import open_cube
    from ..settings import ScoreSettings
    from ..sources._tiny import build_tiny_series
    from ._console import console
    from ._scoring import order_command, score_command
    from .figures import open_for_figures

    settings = ScoreSettings.from_preset("score")
    score_command("builtin:tiny", out / "cube.zarr", settings)
    order_command("builtin:tiny", out / "cube.zarr", settings, steps=[], modules=["block", "attn", "mlp"],
                  metric="importance")
    made = analyses.draw_all(open_for_figures(out / "cube.zarr", "importance"), out / "figures", "importance")
    cube = open_cube(out / "cube.zarr").isel(step=-1).sel(model="builtin:tiny")
    for dataset in cube["dataset"].values:
        agreement = analyses.strategy_agreement(cube["drop_order"].sel(dataset=dataset))
        console.print(f"one-shot vs iterative on {dataset}:\n" + analyses.describe(agreement))
    curve = json.loads((build_tiny_series() / "series.json").read_text())["loss_curve"]
    arr = {k: np.array([c[k] for c in curve]) for k in ("step", "tokens", "loss")}
    fig = analyses.loss_curve(arr["step"], arr["tokens"], arr["loss"], title="builtin:tiny training loss")
    return made + analyses.save(fig, out / "figures" / "loss_curve")


def _demo_study(out: Path) -> list[Path]:
    from ..sources import open_series
    from ..study.settings import StudySettings
    from ._console import console
    from ._study import study_command

    final = open_series("builtin:tiny").checkpoints[-1]
    settings = StudySettings.from_preset("demo")
    console.print(f"study chain on builtin:tiny step {final.step}, orders from {settings.dataset}")
    study_command(Path(final.path), store=out / "cube.zarr", out=out / "study", settings=settings,
                  model="builtin:tiny", step=final.step)
    return sorted((out / "study" / "figures").glob("*.p*"))


def _demo_suite(out: Path) -> list[Path]:
    """Three seeds of a small builtin:tiny in one cube, and their importance band at the last steps."""
    import analyses

    from ..cube import open_cube
    from ..settings import ScoreSettings
    from ._scoring import score_command

    settings = ScoreSettings.from_preset("demo-suite")
    score_command("suite:tiny-seeds", out / "suite.zarr", settings)
    imp = open_cube(out / "suite.zarr").importance.sel(dataset="prose").mean("sample")
    steps = [int(imp.step[1]), int(imp.step[-1])]
    title = "tiny-seeds: importance per layer across 3 seeds, calibration set prose"
    fig = analyses.seed_band(imp, steps, title=title)
    return analyses.save(fig, out / "figures" / "seed_band_tiny-seeds")


def _demo_proxy(out: Path) -> list[Path]:
    """Proxy against truth on builtin:tiny: cosine importance, exact ablation (loss_delta, kl) and its
    first-order estimate at three steps (first, middle, last), on prose; the scatter at the final step
    and the agreement over the steps."""
    import analyses

    from ..cube import open_cube
    from ..settings import ScoreSettings
    from ..sources import Series, open_series
    from ._scoring import score_command

    series = open_series("builtin:tiny")
    ckpts = series.checkpoints
    steps = [ckpts[0], ckpts[len(ckpts) // 2], ckpts[-1]]
    settings = ScoreSettings.from_preset("demo-proxy")
    score_command([Series(series.model, steps)], out / "proxy.zarr", settings)
    cube = open_cube(out / "proxy.zarr").sel(model="builtin:tiny", dataset="prose")
    final = cube.isel(step=-1)
    scatter = analyses.proxy_scatter(final, title=f"builtin:tiny step {int(final.step)}: cosine "
                                     "importance vs loss increase when dropped, prose")
    made = analyses.save(scatter, out / "figures" / "proxy_vs_truth_builtin-tiny")
    pairs = [("importance", "loss_delta"), ("loss_delta_grad", "loss_delta")]
    fig = analyses.agreement_over_steps(
        cube, pairs, title="builtin:tiny, attention: proxies against the measured loss, prose")
    return made + analyses.save(fig, out / "figures" / "proxy_agreement_builtin-tiny")
