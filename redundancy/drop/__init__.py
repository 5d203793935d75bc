"""Drop selection: iterative orders (drop one, re-score, repeat)."""
from ._iterative import iterative_order

__all__ = ["iterative_order"]
