"""The `redundancy` command: thin; one module per command group, every step a library call.

    score.py    score, crawl, order        study.py    drop, evaluate, quantize, study, table
    figures.py  heatmap, figures           info.py     list, check, datasets, families
    demo.py     demo
"""
from . import convert, demo, figures, info, score, study  # noqa: F401,E402 - importing a module registers its commands
from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
