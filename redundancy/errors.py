"""Every error the toolkit raises on purpose. Each message says what was wrong and what to do."""
from __future__ import annotations

import errno


class RedundancyError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class NotFoundError(RedundancyError, LookupError):
    """A name (metric, calibration set, family, series) is not registered."""


class UnsupportedFamilyError(RedundancyError):
    """A checkpoint's `model_type` is not in the family table."""


class SeriesError(RedundancyError):
    """A checkpoint series cannot be read (missing path, no config.json, ...)."""


class CalibrationError(RedundancyError):
    """A calibration set cannot give what was asked (offline, too few windows, context too short)."""


class NonFiniteActivationError(RedundancyError, FloatingPointError):
    """NaN or inf appeared in the residual stream (fp16 overflow, broken weights)."""


class StoreError(RedundancyError):
    """The output store is not a cube, or holds scores made with other settings."""


class SelfCheckError(RedundancyError):
    """The hook sites do not rebuild a layer's output: the family entry no longer fits the model."""


class DropError(RedundancyError):
    """A drop plan cannot be applied or saved as asked (layer out of range, a config field no
    dropped checkpoint could keep, a KV-cache anchor)."""


class OutputError(RedundancyError):
    """An output would replace its input or an existing result, or is locked by another writer."""


def one_line(exc: BaseException) -> str:
    """Any exception as one line that says what was wrong and what to do; ours are already that."""
    if isinstance(exc, RedundancyError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}:{where}; {_OS_HINTS[exc.errno]}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    for code, words in _OS_WORDS.items():  # OS errors other libraries (safetensors, zarr) re-raise as text
        if words in text:
            return f"{type(exc).__name__}: {words}; {_OS_HINTS[code]}"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


_OS_WORDS = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
             errno.EDQUOT: "Disk quota exceeded"}
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere, then run again (finished work is kept)",
    errno.EROFS: "the file system is read-only: write elsewhere (--out, --cache-dir)",
    errno.EACCES: "no permission: write elsewhere or fix the permissions",
    errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
}
