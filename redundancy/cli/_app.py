"""The typer app, its --debug flag, and `command`: every failure, whoever raised it, as one line."""
from __future__ import annotations

import functools
from typing import Callable

import click
import typer

from ..errors import one_line

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure how redundant each block, attention and MLP layer is, across training.")

_DEBUG = {"on": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug",
                                        help="show the full traceback of a failure")) -> None:
    """Measure how redundant each block, attention and MLP layer is, across training."""
    _DEBUG["on"] = debug


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(1)


def command(name: str | None = None) -> Callable[[Callable], Callable]:
    """`app.command`, with any failure printed as one red line and exit code 1 (the traceback with
    --debug). Commands import what they use inside their body, so `--help` starts at once."""
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
