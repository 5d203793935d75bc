"""Locate the shipped inputs in the repository's top-level `data/` folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def load_yaml(name: str) -> Any:
    """Parse data/<name>; the package is installed editable, next to its data folder."""
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install redundancy from its repository with "
                                "`pip install -e .` so that data/ sits next to the package")
    return yaml.safe_load(path.read_text())
