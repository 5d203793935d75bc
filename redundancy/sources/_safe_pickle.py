"""Load a downloaded torch pickle without running its code: PyTorch's own restricted unpickler.

A Megatron-LM checkpoint pickles its `argparse.Namespace` next to the tensors, and that namespace
holds objects of other modules: `megatron.*` enums (`args.model_type`, a
`megatron.core.enums.ModelType`; since Megatron Core 0.16 `args.attention_backend`, an `AttnBackend`),
`signal.Signals` (`args.exit_signal = signal.SIGTERM`, core 0.16), `torch.dtype` fields, numpy arrays
(the saved RNG state), `io.BytesIO` (Transformer Engine's `_extra_state` before TE 2.0) and, in a
protocol-2 pickle, `builtins.bytes` (what `torch.save` writes for `b""`).

`safe_load` builds on `torch.load(weights_only=True)` (torch/_weights_only_unpickler.py): first
`torch.serialization.get_unsafe_globals_in_checkpoint` lists every global the file asks for beyond
PyTorch's own allowlist, reading the pickle's opcodes only; a name outside `ALLOWED` and not under
`megatron.` refuses the whole file, unread and with nothing it names imported. The rest is loaded
under `torch.serialization.safe_globals`, each `megatron.*` name bound to an inert stand-in class
(`StandIn`: it keeps its constructor arguments and state, and runs nothing), so `megatron` is
neither needed nor imported.
"""
from __future__ import annotations

import argparse
import io
import pickle
import signal
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from ..errors import SeriesError


def _numpy_reconstruct() -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    return core.multiarray._reconstruct, core.multiarray.scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstruct()

# what a training checkpoint holds beyond PyTorch's own allowlist: full name -> the object it loads as
ALLOWED: dict[str, Any] = {
    "argparse.Namespace": argparse.Namespace,
    "signal.Signals": signal.Signals,  # args.exit_signal (Megatron Core >= 0.16)
    "_io.BytesIO": io.BytesIO,  # Transformer Engine < 2.0 `_extra_state`
    "builtins.bytes": bytes,  # protocol 2 writes b"" as bytes()
    "builtins.slice": slice, "builtins.frozenset": frozenset,
    "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype,
    "numpy.core.multiarray._reconstruct": _RECONSTRUCT, "numpy._core.multiarray._reconstruct": _RECONSTRUCT,
    "numpy.core.multiarray.scalar": _SCALAR, "numpy._core.multiarray.scalar": _SCALAR,
}
# never named in a file, but a numpy.dtype is built (BUILD) as an instance of one of these classes
_DTYPE_CLASSES = [(t, f"numpy.dtypes.{t.__name__}")
                  for t in {type(np.dtype(c)) for c in "?bhilqBHILQefdgFDGSUV"}]


class StandIn:
    """What a `megatron.*` object unpickles to: its constructor arguments and state, nothing run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def value(self) -> Any:  # an enum member pickles as Class(value)
        return self.args[0] if self.args else None

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(map(repr, self.args))})"


@lru_cache(maxsize=1024)  # one class per megatron.* name a file asks for: a checkpoint has a few
def stand_in(qualname: str) -> type:
    """The inert class standing for the global `qualname` (a `megatron.*` name); never imports it."""
    module, _, name = qualname.rpartition(".")
    return type(name, (StandIn,), {"__module__": module, "__qualname__": qualname})


def is_megatron(qualname: str) -> bool:
    return qualname == "megatron" or qualname.startswith("megatron.")


def allowed_globals(names: list[str], where: Path | str) -> list[tuple[Any, str]]:
    """(object, name) pairs for `safe_globals`, one per name a file asks for.
    Raises SeriesError naming the first global outside ALLOWED and megatron.*."""
    pairs = list(_DTYPE_CLASSES)
    for name in sorted(names):
        if name in ALLOWED:
            pairs.append((ALLOWED[name], name))
        elif is_megatron(name):
            pairs.append((stand_in(name), name))
        else:
            raise SeriesError(f"{where} asks to unpickle {name}, which is outside what a training checkpoint "
                              "holds; refused unread, nothing it names imported (the file may be crafted: "
                              "check its source)")
    return pairs


def safe_load(path: Path) -> Any:
    """torch.load(weights_only=True) of a downloaded file, with ALLOWED and megatron stand-ins added.

    Raises SeriesError: the file asks for any other global (refused before a byte of its data is
    unpickled), it is not a torch.save zip archive (the legacy pre-1.6 format is not read), or it is
    not a readable torch checkpoint."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise SeriesError(f"{path} is not a torch.save zip archive (torch's format since 1.6): a legacy or "
                          "damaged file, not read; re-save it with a current torch, or delete it from the "
                          "cache and run again to download it anew")
    try:
        names = get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError, OSError) as exc:
        raise _unreadable(path, exc) from None
    with safe_globals(allowed_globals(names, path)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise _unreadable(path, exc) from None


def safe_unpickle(file: IO[bytes], extra: dict[str, Any], where: Path | str) -> Any:
    """A plain pickle stream (not a torch.save archive: torch.distributed.checkpoint's `.metadata`,
    protocol 4 with frames, which PyTorch's weights-only unpickler does not parse) read by a
    `pickle.Unpickler` whose `find_class` answers only from PyTorch's weights-only allowlist, ALLOWED,
    `extra` (name -> object) and megatron stand-ins, importing nothing. Raises SeriesError as safe_load,
    at the first global outside them, before anything it names is looked up or called."""
    from torch import _weights_only_unpickler as wo

    known = {**wo._get_allowed_globals(), **ALLOWED, **dict((n, t) for t, n in _DTYPE_CLASSES), **extra}

    class _Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            qualname = f"{module}.{name}"
            if qualname in known:
                return known[qualname]
            return allowed_globals([qualname], where)[-1][0]  # a megatron stand-in, or SeriesError

    try:
        return _Restricted(file).load()
    except SeriesError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise _unreadable(where, exc) from None


def _unreadable(path: Path | str, exc: BaseException) -> SeriesError:
    return SeriesError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it from the cache and "
                       "run again to download it anew")
