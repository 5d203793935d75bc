"""The cube: an xarray Dataset in zarr, idempotent per (model, step, dataset)."""
from ._check import CubeReport, check_cube
from ._open import open_cube
from ._schema import DIMS, PROVENANCE, SETTINGS_KEYS, make_cell, make_order_cell, settings_diff
from ._store import CubeStore

__all__ = ["open_cube", "check_cube", "CubeReport", "CubeStore", "make_cell", "make_order_cell",
           "settings_diff", "DIMS", "PROVENANCE", "SETTINGS_KEYS"]
