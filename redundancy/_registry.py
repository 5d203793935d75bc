"""One small registry pattern for metrics, calibration sets and series kinds."""
from __future__ import annotations

import difflib
from typing import Generic, Iterable, Iterator, TypeVar

from .errors import NotFoundError, RedundancyError

T = TypeVar("T")


def unknown(kind: str, name: str, known: Iterable[str]) -> str:
    """The one-line refusal of a name that is not among `known`, with the closest one suggested:
    "unknown dtype 'float8'. Did you mean 'float16'? Known: bfloat16, float16, float32."."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known: {', '.join(k or repr(k) for k in known)}."


def check_name(kind: str, name: str, known: Iterable[str]) -> str:
    """`name` if it is one of `known`; else raises NotFoundError with `unknown`'s message."""
    known = list(known)
    if name not in known:
        raise NotFoundError(unknown(kind, name, known))
    return name


class Registry(Generic[T]):
    """Name -> object, with a "did you mean" error on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add `item` under `name`; returns it. Raises RedundancyError for a name registered already."""
        if name in self._items:
            raise RedundancyError(f"{self.kind} {name!r} is registered twice: give it another name")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item registered as `name`. Raises NotFoundError (with the closest name) for any other."""
        try:
            return self._items[name]
        except KeyError:
            raise NotFoundError(self.miss_message(name)) from None

    def miss_message(self, name: str) -> str:
        return unknown(self.kind, name, self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
