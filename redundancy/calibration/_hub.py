"""Calibration sets from the Hugging Face hub, read through `datasets` (streaming)."""
from __future__ import annotations

import os
from typing import Callable, Iterator

from ..errors import CalibrationError


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_documents(repo: str, config: str | None, split: str,
                  to_text: Callable[[dict], str], builtin: list[str]) -> Iterator[str]:
    """Stream a hub dataset's rows as documents; a clear error when the hub cannot be reached."""
    hint = (f"calibration set from {repo} needs the Hugging Face hub, which {{why}}. Use a built-in "
            f"offline set instead: {', '.join(builtin)}.")
    if _offline():
        raise CalibrationError(hint.format(why="is switched off (HF_HUB_OFFLINE)"))
    import datasets

    try:
        rows = datasets.load_dataset(repo, config, split=split, streaming=True)
        for row in rows:
            yield to_text(row)
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise CalibrationError(hint.format(why=f"cannot be reached ({type(exc).__name__})")) from exc
