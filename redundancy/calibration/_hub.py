"""Calibration sets from the Hugging Face hub, read through `datasets` (streaming)."""
from __future__ import annotations

import os
from typing import Callable, Iterator

from ..errors import CalibrationError


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_documents(repo: str, config: str | None, split: str, to_text: Callable[[dict], str],
                  builtin: list[str], field: str | None = None) -> Iterator[str]:
    """Stream a hub dataset's rows as documents (HF_ENDPOINT is honoured); empty rows are skipped.
    Rows are fetched as packing pulls them and no further (a long row is tokenized in pieces,
    _pieces.py). One CalibrationError when the hub cannot be reached, or a row lacks `field`
    (naming its fields)."""
    hint = (f"calibration set from {repo} needs the Hugging Face hub, which {{why}}. Use an offline set "
            f"instead: {', '.join(builtin)}, or a local file or folder.")
    if _offline():
        raise CalibrationError(hint.format(why="is switched off (HF_HUB_OFFLINE)"))
    import datasets

    try:
        for row in datasets.load_dataset(repo, config, split=split, streaming=True):
            if field is not None and field not in row:
                raise CalibrationError(f"hf:{repo} {split} has no field {field!r}; its fields: "
                                       f"{', '.join(row)}")
            if (text := to_text(row)).strip():  # kept as written; blank rows (wikitext's) skipped
                yield text
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise CalibrationError(hint.format(why=f"cannot be reached ({type(exc).__name__})")) from exc
    except ValueError as exc:  # an unknown split or config
        raise CalibrationError(f"hf:{repo}: {' '.join(str(exc).split())[:300]}") from None
