"""`heatmap` and `figures`: the study's figures from a cube (drawn by analyses/, PNG and PDF)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import OutputError
from . import _options as o
from ._app import command


def open_for_figures(store: Path, metric: str):
    """The cube, with files-only matplotlib; a metric the cube lacks is a one-line error."""
    import matplotlib

    from ..cube import open_cube
    from ..errors import StoreError

    matplotlib.use("Agg")  # files only: no window, whatever the environment
    cube = open_cube(store)
    if metric not in cube:
        raise StoreError(f"metric {metric!r} is not in {store}; it holds {', '.join(cube.data_vars)}")
    return cube


def figures_out(out: Path, store: Path) -> Path:
    """`out`, where figures may be drawn: absent, empty or a figures folder (redrawn figures replace
    theirs, each file atomically; nothing else in it is touched), never inside the cube. Raises
    OutputError for anything else (a cube, a results store, a model, a folder of other files)."""
    from .._atomic import check_output

    return check_output(out, [store] if isinstance(store, Path) else [], overwrite=True, kind="figures")


@command()
def heatmap(store: str = o.cube("a cube store (a folder or s3://BUCKET/PATH)"),
            out: Optional[Path] = typer.Option(None, help="folder for the figures "
                                               "(default STORE/../figures)"),
            metric: str = typer.Option("importance", help="metric variable to draw")) -> None:
    """Draw step x layer heatmaps per module, layer 0 apart, one figure per model and dataset."""
    import analyses

    if out is None and isinstance(store, str):
        raise OutputError("heatmap: a cube on object storage needs --out (a local folder for the figures)")
    out = figures_out(out or store.parent / "figures", store)
    for path in analyses.heatmaps(open_for_figures(store, metric), out, metric):
        typer.echo(path)


@command()
def figures(store: str = o.cube("a cube store (a folder or s3://BUCKET/PATH)"),
            out: Path = typer.Option(..., "--out", "-o", help="folder for the figures"),
            metric: str = typer.Option("importance", help="metric variable to draw")) -> None:
    """Draw every figure: heatmaps, per-layer lines, order grids, sample counts, dataset agreement,
    one-shot vs iterative (where orders are stored)."""
    import analyses

    paths = analyses.draw_all(open_for_figures(store, metric), figures_out(out, store), metric)
    typer.echo(f"{len(paths)} files in {out}")
