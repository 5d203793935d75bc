"""The toolkit's own cache root: $REDUNDANCY_CACHE, else ~/.cache/redundancy.

What lives under it: the built-in tiny series (sources/_tiny.py, `builtin-tiny-<recipe key>/`), hub
listings (sources/_hub.py, `listings/`), Megatron checkpoints converted to Hugging Face format
(sources/_fetch.py, `converted/`) and the weight digests (_digest.py, `weight-digests.json`). Never
beside the weights, whose folder may be read-only or someone else's input. Imports nothing heavy:
listing a local series reads it without torch.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root, read from the environment at each call (tests and users set it late).
    Raises nothing; the folder is not created here (its writers create what they write)."""
    return Path(os.environ.get("REDUNDANCY_CACHE", Path.home() / ".cache" / "redundancy"))
