"""Load a downloaded torch pickle without running its code.

A Megatron-LM checkpoint pickles its `argparse.Namespace` next to the tensors, and that namespace
holds `megatron.*` objects (`args.model_type` is a `megatron.core.enums.ModelType`). A plain
`torch.load(weights_only=False)` would import `megatron` (which we do not depend on) and would run
whatever a crafted file asks for. This unpickler resolves only the globals a training checkpoint
needs: tensor and storage rebuilders, torch dtypes, plain containers, numpy arrays (the saved RNG
state), `io.BytesIO` (Transformer Engine's `_extra_state` before TE 2.0), `argparse.Namespace`,
and inert stand-ins for any `megatron.*` class. Anything else is refused before it is called.
"""
from __future__ import annotations

import pickle
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..errors import SeriesError

_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"), ("torch", "device"), ("collections", "OrderedDict"), ("argparse", "Namespace"),
    ("_io", "BytesIO"), ("_codecs", "encode"),  # protocol 2 writes bytes as _codecs.encode(str, latin1)
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "bytearray"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


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
def _stand_in(module: str, name: str) -> type:
    return type(name, (StandIn,), {"__module__": module, "__qualname__": f"{module}.{name}"})


class Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed set."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "megatron" or module.startswith("megatron."):
            return _stand_in(module, name)
        raise Refused(module, name)


def _pickle_module() -> types.ModuleType:
    """What `torch.load(pickle_module=...)` reads: an Unpickler class (and load, for the pre-1.6 format)."""
    module = types.ModuleType("redundancy_safe_pickle")
    module.Unpickler = _Unpickler
    module.load = lambda file, **kw: _Unpickler(file, **kw).load()
    return module


def safe_load(path: Path) -> Any:
    """torch.load of a downloaded file with the restricted unpickler; refusals as one SeriesError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_pickle_module())
    except Refused as exc:
        raise SeriesError(f"{path} asks to unpickle {exc.qualname}, which a training checkpoint never "
                          "holds; refused without running it (the file may be crafted: "
                          "check its source)") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise SeriesError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {exc}); "
                          "delete it from the cache and run again to download it anew") from None
