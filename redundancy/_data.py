"""The shipped inputs (calibration sets, presets, suites, the built-in recipe, lm-eval tasks): package
data under redundancy/data/, read through importlib.resources, so any install (wheel, editable,
sdist) finds them."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

# A regular folder once installed (the package is not zip-safe: lm-eval reads task files by path).
DATA_DIR = Path(str(files("redundancy") / "data"))


def load_yaml(name: str) -> Any:
    """Parse redundancy/data/<name>."""
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed package; reinstall redundancy "
                                "(its data/ files are package data)")
    return yaml.safe_load(path.read_text())
