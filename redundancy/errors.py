"""Every error the toolkit raises on purpose. Each message says what was wrong and what to do."""
from __future__ import annotations


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


class OutputError(RedundancyError):
    """An output would replace its input or an existing result, or is locked by another writer."""
