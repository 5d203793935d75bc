"""A cube on disk: a zarr v3 group whose cells are written whole and renamed into place.

Layout: STORE/zarr.json (root attrs: settings), STORE/cells/<model>/<dataset>/step-<step>/ (a zarr
group per cell), STORE/.tmp/ (cells being written). A rename is atomic, so a cell is either absent
or complete: a killed run leaves only a temporary folder, and writers of disjoint cells never touch
each other's files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import xarray as xr
import zarr

from ..errors import StoreError
from ._schema import SETTINGS_KEYS, settings_diff

_FORMAT = "redundancy-cube/1"


def _key(name: str) -> str:
    """A folder name for a model or dataset name (the real name lives in the cell's coordinates)."""
    return re.sub(r"[^A-Za-z0-9._-]", lambda m: f"~{ord(m.group()):02x}", name)


class CubeStore:
    """Writes and finds cells of one cube; create with `CubeStore.open(path, settings)`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path, settings: dict[str, Any] | None = None) -> "CubeStore":
        """Open or create the store; refuse a non-cube path or other calibration settings."""
        store = cls(Path(path))
        store._check_path()
        if (store.path / "zarr.json").exists():
            stored = store.settings()
            if settings is not None and (diff := settings_diff(stored, settings)):
                raise StoreError(f"{store.path} holds scores made with other calibration settings "
                                 f"({'; '.join(diff)}); write to another --out or use its settings")
        else:
            if settings is None:
                raise StoreError(f"{store.path} is not a cube yet: score something into it first")
            root = zarr.open_group(str(store.path), mode="w-", zarr_format=3)
            root.attrs.update({"format": _FORMAT, "settings": {k: settings[k] for k in SETTINGS_KEYS}})
        return store

    def _check_path(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise StoreError(f"{p} is an existing file, not a cube store; choose another --out")
        if p.is_dir() and any(p.iterdir()) and not (p / "zarr.json").exists():
            raise StoreError(f"{p} is a non-empty folder that is not a cube store; choose another --out")
        if (p / "zarr.json").exists():
            attrs = json.loads((p / "zarr.json").read_text()).get("attributes", {})
            if attrs.get("format") != _FORMAT:
                raise StoreError(f"{p} is a zarr store but not a redundancy cube; choose another --out")

    def settings(self) -> dict[str, Any]:
        return json.loads((self.path / "zarr.json").read_text())["attributes"]["settings"]

    def cell_path(self, model: str, step: int, dataset: str, kind: str = "cells") -> Path:
        """`kind` is "cells" (scores) or "orders" (dropping orders)."""
        return self.path / kind / _key(model) / _key(dataset) / f"step-{step:012d}"

    def has_cell(self, model: str, step: int, dataset: str, kind: str = "cells") -> bool:
        return (self.cell_path(model, step, dataset, kind) / "zarr.json").exists()

    def read_cell(self, model: str, step: int, dataset: str, kind: str = "cells") -> xr.Dataset:
        """One stored cell, loaded into memory."""
        path = self.cell_path(model, step, dataset, kind)
        return xr.open_zarr(str(path), consolidated=False, zarr_format=3).load()

    def write_cell(self, cell: xr.Dataset, kind: str = "cells") -> bool:
        """Write one cell atomically; False if it was already there (kept as it was)."""
        model, step, dataset = (cell[c].item() for c in ("model", "step", "dataset"))
        final = self.cell_path(model, int(step), dataset, kind)
        if final.exists():
            return False
        tmp = self.path / ".tmp" / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        cell.to_zarr(str(tmp), mode="w-", zarr_format=3, consolidated=False)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent writer finished the same cell first
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True

    def cell_paths(self, kind: str = "cells") -> list[Path]:
        return sorted(p.parent for p in (self.path / kind).glob("*/*/step-*/zarr.json"))

    def clean_partial(self) -> int:
        """Remove this host's temporary cells left by processes that no longer run."""
        removed = 0
        for tmp in (self.path / ".tmp").glob(f"{socket.gethostname()}-*"):
            pid = int(tmp.name.rsplit("-", 2)[-2])
            if not _alive(pid):
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
