"""The typer app, its --debug flag, and `command`: every failure, whoever raised it, as one line.

Three kinds of failure reach the user, each as one red `error:` line on stderr:
- the command line does not parse (a bad integer, an unknown option, a missing argument): typer's
  usage errors, exit code 2 (typer would print them in a framed box of several lines);
- a value is refused (an option's check, or the library's): a RedundancyError, exit code 1;
- anything else a command raises: one line, exit code 1 (the traceback with --debug).
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Sequence

import typer
from typer.core import TyperGroup

from ..errors import one_line


class _OneLineGroup(TyperGroup):
    """The command group whose errors, parse errors included, are one line each."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command line; in standalone mode (the script, CliRunner) exit with its code.
        Commands return None, so an int result is an exit code (typer returns --help's 0 and
        typer.Exit's code when not standalone)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # usage errors of the vendored click
            _usage(exc)
        except typer.Abort:
            _print("aborted")
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - an option's check (RedundancyError) or a bug, one line
            if _DEBUG["on"]:
                raise
            _print(one_line(exc))
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _usage(exc: typer.TyperException) -> None:
    """A usage error as one line naming the command's --help; `redundancy` alone prints the help."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help (rich prints it while building it)
        if text := exc.format_message().strip():
            typer.echo(text, err=True)
        sys.exit(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _print(" ".join(_named(exc).split()) + hint)
    sys.exit(exc.exit_code)


def _named(exc: typer.TyperException) -> str:
    """The message, naming the value typer could not convert (its pydantic error omits it):
    "Invalid value for '--samples': '1e3' (Input should be a valid integer, ...)"."""
    message = exc.format_message()
    errors = getattr(exc.__cause__, "errors", None)
    found = errors() if callable(errors) else []
    head, sep, why = message.partition(": ")
    if not found or "input" not in found[0] or not sep:
        return message
    return f"{head}: {found[0]['input']!r} ({why.rstrip('.')})"


app = typer.Typer(cls=_OneLineGroup, add_completion=False, no_args_is_help=True,
                  help="Measure how redundant each block, attention and MLP layer is, across training.")

_DEBUG = {"on": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug",
                                        help="show the full traceback of a failure"),
             verbose: bool = typer.Option(False, "--verbose",
                                          help="show the debug log too (lm-eval's warnings and progress "
                                               "bars)")) -> None:
    """Measure how redundant each block, attention and MLP layer is, across training."""
    _DEBUG["on"] = debug
    if verbose:
        import logging
        logger = logging.getLogger("redundancy")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(logging.StreamHandler())  # stderr, bound now: lm-eval's redirection skips it


def _print(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg="red")


def _fail(message: str) -> None:
    _print(message)
    raise typer.Exit(1)


def command(name: str | None = None) -> Callable[[Callable], Callable]:
    """`app.command`, with any failure printed as one red line and exit code 1 (the traceback with
    --debug). Commands import what they use inside their body, so `--help` starts at once."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)  # typer reads the options from the wrapped signature
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise
            except KeyboardInterrupt:
                _fail("interrupted; finished cells and rows are kept: run the same command again to resume")
            except Exception as exc:  # noqa: BLE001 - every failure reaches the user as one line
                if _DEBUG["on"]:
                    raise
                _fail(one_line(exc))
        return app.command(name)(run)
    return register
