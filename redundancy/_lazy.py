"""Names of a package imported on first use (PEP 562), so that importing the package (and the CLI,
and the light settings modules under it) does not import torch."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, namespace: dict[str, Any],
               names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`: public name -> the submodule (relative to the package)
    that defines it, imported when the name is first read, then kept in `namespace` (the package's
    globals) so later reads are plain attribute reads. Raises AttributeError for any other name."""
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{names[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
