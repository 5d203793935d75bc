"""Commands that only read and print: `list` (a hub history), `check` (a cube or a results store),
`datasets`, `families`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from . import _options as o
from ._app import command
from ._console import console, print_table

if TYPE_CHECKING:
    from ..sources import Checkpoint


@command("list")
def list_(repo: str = typer.Argument(..., help="hub repo id, e.g. EleutherAI/pythia-160m; with one repo per "
                                     "step (tinyllama) an author, or repo ids joined by commas"),
          preset: Optional[str] = o.PRESET, pattern: Optional[str] = o.PATTERN,
          tokens_per_step: Optional[float] = o.TPS, every: Optional[str] = o.EVERY,
          steps: List[int] = o.STEPS, max_n: Optional[int] = o.MAXN, token: Optional[str] = o.TOKEN,
          endpoint: Optional[str] = o.ENDPOINT, stages: List[str] = o.STAGE) -> None:
    """List a hub repo's checkpoints (step, tokens, revision, commit, size) and their integrity flags:
    duplicates, partial duplicates, steps identical to the final, config drift, missing tokenizers.
    Downloads no weights."""
    from ..sources import open_series

    selection = o.selection(preset=preset, pattern=pattern, tokens_per_step=tokens_per_step, every=every,
                                steps=steps, max_n=max_n, stages=stages)
    series = open_series(f"hub:{repo}", **selection.series_args(), token=token, endpoint=endpoint)
    for line in listing(series.checkpoints):
        typer.echo(line)


def flag_text(c: Checkpoint) -> str:
    """Every integrity flag of one checkpoint, for people ("" when none)."""
    parts = []
    if c.identical_to_final:
        parts.append("identical to the final step (a wrong upload?): copied, left out of dynamics")
    elif c.duplicate_of is not None:
        parts.append(f"duplicate of step {c.duplicate_of}")
    if c.partial_duplicate_of:
        steps = ", ".join(map(str, c.partial_duplicate_of))
        parts.append(f"shares {', '.join(c.shared_files)} with step {steps}")
    if c.config_drift:
        parts.append(f"config drift: {c.config_drift}")
    if not c.has_tokenizer and c.format == "hf":
        parts.append(f"no tokenizer: uses {c.tokenizer_from}'s" if c.tokenizer_from
                     else "no tokenizer in the series")
    return "; ".join(parts)


def listing(ckpts: list[Checkpoint]) -> list[str]:
    """Lines for `redundancy list`: step, tokens (billions), revision, commit, download size (MB), flags."""
    rows = [f"{'step':>9} {'tokens':>10} {'revision':<34} {'commit':<10} {'download':>10}  flags"]
    for c in ckpts:
        tokens = "-" if c.tokens is None else f"{c.tokens / 1e9:.4g}B"
        rows.append(f"{c.step:>9} {tokens:>10} {c.revision:<34} {(c.commit or '')[:8]:<10} "
                    f"{c.download_bytes / 1e6:>8.1f}MB  {flag_text(c)}".rstrip())
    return rows


def flag_report(ckpts: list[Checkpoint]) -> list[str]:
    """One line per flagged checkpoint, printed before anything is scored."""
    return [f"step {c.step} ({c.revision}): {text}" for c in ckpts if (text := flag_text(c))]


@command()
def check(store: str = typer.Argument(..., help="a cube (folder or s3://... URL) or a results store"),
          repair: bool = typer.Option(False, "--repair",
                                      help="a cube: convert a format-1 cube, remove damaged cells "
                                      "(the next score rescores them), rebuild the index")) -> None:
    """Verify a store without changing it. A cube: every cell read whole (each file's xxh3 digest, the
    labels it records against its place, the index against the cells), listing what a run would
    rescore. A results store: every version against its manifest (sha256 of each file) and its current
    link, saying what the next write repairs from. Exit code 1 when damaged."""
    from .._stores import describe, store_kind
    from ..cube import check_cube
    from ..cube._backend import is_url
    from ..errors import StoreError

    kind = "cube" if is_url(store) else store_kind(store)
    if kind == "results":
        return _check_results(Path(store))
    if kind != "cube":
        raise StoreError(f"{store} is {describe(kind, store) if kind != 'empty' else 'not there or empty'}, "
                         "not a cube or results store; nothing to check")
    report = check_cube(store, repair=repair, log=lambda msg: console.print(msg, markup=False))
    if report.repaired is not None:
        console.print(f"{store}: repaired: "
                      + ", ".join(f"{n} {what}" for what, n in report.repaired.items()),
                      markup=False)
    for line in report.notes:
        console.print(f"note: {line}", markup=False)
    for line in report.damaged:
        console.print(f"damaged (the next run rescores it): {line}", markup=False)
    for line in report.foreign:
        console.print(f"foreign: {line}", markup=False)
    foreign = f", {len(report.foreign)} objects that are no cell" if report.foreign else ""
    console.print(f"{store}: {report.sound} cells sound, {len(report.damaged)} damaged{foreign}",
                  markup=False)
    if report.damaged or report.foreign:
        raise typer.Exit(1)


def _check_results(store: Path) -> None:
    from ..study.results import check_results

    lines, sound = check_results(store)
    for line in lines:
        console.print(f"{store}: {line}", markup=False)
    console.print(f"{store}: {'sound' if sound else 'damaged'}")
    if not sound:
        raise typer.Exit(1)


@command()
def datasets() -> None:
    """Every registered calibration set: name, source, offline or not, description. Besides these,
    -d takes a local file or folder, or hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]."""
    from ..calibration import CALIBRATION_SETS

    sets = [CALIBRATION_SETS.get(name) for name in CALIBRATION_SETS.names()]
    print_table("calibration sets", ["name", "source", "offline", "description"],
                [[cs.name, cs.source, "yes" if cs.offline else "no", cs.description] for cs in sets])


@command()
def families() -> None:
    """The family table: model type, residual form, where each module's output joins the residual,
    and whether layer-by-layer scoring supports it."""
    from ..families import table_rows

    rows = table_rows()
    print_table("families (read from config.model_type)", list(rows[0]), [list(r.values()) for r in rows])
