"""Refuse a device this machine does not have, before any work."""
from __future__ import annotations

from .errors import RedundancyError


def check_device(device: str) -> None:
    """One RedundancyError naming the problem when `device` is not usable here."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise RedundancyError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RedundancyError(f"--device {device}: this machine has no CUDA GPU torch can use; "
                              "use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RedundancyError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RedundancyError(f"--device {device}: MPS is not available here; use --device cpu")
