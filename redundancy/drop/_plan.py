"""Drop plans: which attention and MLP layers to remove, from explicit lists or from an order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .._registry import Registry
from ..errors import DropError


@dataclass(frozen=True)
class PlanKind:
    """What a plan made from an order removes: `title` names its plans ("Attn" -> "Attn-4"), and
    `layers(first)` turns the order's first k entries into (attention layers, MLP layers)."""

    title: str
    description: str
    layers: Callable[[Sequence[Any]], tuple[tuple[int, ...], tuple[int, ...]]]


def _ints(first: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(layer) for layer in first)


# The plan kinds (the CLI's --kind / --ks choices): an order of layers (attn, mlp, block) or of
# (module, layer) pairs ranked together (joint).
PLAN_KINDS: Registry[PlanKind] = Registry("plan kind")
PLAN_KINDS.register("attn", PlanKind("Attn", "attention sublayers", lambda first: (_ints(first), ())))
PLAN_KINDS.register("mlp", PlanKind("MLP", "MLP sublayers", lambda first: ((), _ints(first))))
PLAN_KINDS.register("block", PlanKind("Block", "whole layers (attention and MLP)",
                                      lambda first: (_ints(first), _ints(first))))
PLAN_KINDS.register("joint", PlanKind(
    "Joint", "attention and MLP sublayers ranked in one list",
    lambda first: (tuple(int(layer) for m, layer in first if m == "attn"),
                   tuple(int(layer) for m, layer in first if m == "mlp"))))


@dataclass(frozen=True)
class DropPlan:
    """Layers whose attention / MLP are dropped. A block drop lists the layer in both."""

    attn: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()
    name: str = ""
    kind: str = "custom"  # attn, mlp, block or joint when made from an order

    @property
    def n_dropped(self) -> int:
        """The k of Block-k (layers) for a block plan; otherwise the number of modules dropped."""
        return len(self.attn) if self.kind == "block" else len(self.attn) + len(self.mlp)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attn", tuple(sorted(set(self.attn))))
        object.__setattr__(self, "mlp", tuple(sorted(set(self.mlp))))

    @property
    def blocks_only(self) -> bool:
        """True when every dropped layer loses both sublayers (saved as a shallower stock model)."""
        return bool(self.attn) and self.attn == self.mlp

    @classmethod
    def from_order(cls, kind: str, order, k: int) -> "DropPlan":
        """The first k entries of an order. kind: a PLAN_KINDS name: attn, mlp, block (an order of
        layers) or joint (an order of (module, layer) pairs). Raises NotFoundError for an unknown kind,
        DropError for k < 1 or an order shorter than k."""
        how = PLAN_KINDS.get(kind)
        if k < 1:
            raise DropError(f"--k {k}: the number of modules to drop must be at least 1")
        first = list(order)[:k]
        if len(first) < k:
            raise DropError(f"the order has {len(first)} entries; cannot drop {k}")
        attn, mlp = how.layers(first)
        return cls(attn, mlp, f"{how.title}-{k}", kind)

    def check(self, n_layers: int) -> None:
        bad = [i for i in self.attn + self.mlp if not 0 <= i < n_layers]
        if bad:
            raise DropError(f"layer {bad[0]} does not exist: the model has {n_layers} layers "
                                  f"(0..{n_layers - 1})")
        if self.blocks_only and len(self.attn) >= n_layers:
            raise DropError(f"the plan drops all {n_layers} layers; keep at least one")
