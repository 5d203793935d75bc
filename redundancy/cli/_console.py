"""Where the commands talk: progress bars and messages on stderr, tables on stdout."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, soft_wrap=True)


def bars() -> Progress:
    """Progress bars for checkpoints and batches: description, bar, done/total, elapsed."""
    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table on stdout, its cells printed as written (no rich markup or :emoji: codes)."""
    from rich.table import Table

    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True, emoji=False, markup=False).print(table)
