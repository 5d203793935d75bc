"""A cube on disk: a zarr v3 group whose cells are written whole and renamed into place.

Layout: STORE/zarr.json (root attrs: settings), STORE/cells/<model>/<dataset>/step-<step>/ (a zarr
group per cell, written by _atomic.atomic_dir: a temporary folder beside it, renamed when complete).
A cell is either absent or complete: a killed run leaves only a temporary folder, and writers of
disjoint cells never touch each other's files. Each cell ends with `.complete.json`, the size of
every file in it, written last: a cell whose files were deleted or truncated later is reported as
damaged and rescored, never read as finished.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import xarray as xr
import zarr

from .._atomic import atomic_dir, clean_stale
from .._stores import CUBE_FORMAT, describe, store_kind
from ..errors import OutputError, StoreError
from ._schema import SETTINGS_KEYS, settings_diff

_FORMAT = CUBE_FORMAT
COMPLETE = ".complete.json"  # per cell, written last: every file's size
# zarr lists a group's folder and warns about any file that is not zarr's own: ours is expected
warnings.filterwarnings("ignore", message=r"Object at \.complete\.json is not recognized")


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
            store._create(settings)
        return store

    def _create(self, settings: dict[str, Any]) -> None:
        """The root group with its settings, written whole (a concurrent creator may win: then its
        settings must agree)."""
        try:
            with atomic_dir(self.path, overwrite=False) as tmp:
                root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
                root.attrs.update({"format": _FORMAT, "settings": {k: settings[k] for k in SETTINGS_KEYS}})
        except OutputError:  # created by another process meanwhile, or an empty folder was there
            if not (self.path / "zarr.json").exists():
                self.path.rmdir()  # the empty folder the user gave as --out: replace it
                return self._create(settings)
            if diff := settings_diff(self.settings(), settings):
                raise StoreError(f"{self.path} was just created with other calibration settings "
                                 f"({'; '.join(diff)}); write to another --out") from None

    def _check_path(self) -> None:
        """Raises StoreError where the path holds anything but a cube or nothing: a results store, a
        model, figures, a zarr store of something else, a file, a folder of other files (all kept
        as they are)."""
        found = store_kind(self.path)
        if found not in ("cube", "empty"):
            raise StoreError(f"{self.path} is {describe(found, self.path)}, not a redundancy cube; "
                             "nothing in it was changed: choose another --out")

    def settings(self) -> dict[str, Any]:
        return json.loads((self.path / "zarr.json").read_text())["attributes"]["settings"]

    def cell_path(self, model: str, step: int, dataset: str, kind: str = "cells") -> Path:
        """`kind` is "cells" (scores) or "orders" (dropping orders)."""
        return self.path / kind / _key(model) / _key(dataset) / f"step-{step:012d}"

    def has_cell(self, model: str, step: int, dataset: str, kind: str = "cells") -> bool:
        """True when the cell was written completely (its `.complete.json` or, for cells written
        before that record existed, its zarr.json)."""
        path = self.cell_path(model, step, dataset, kind)
        return (path / COMPLETE).exists() or (path / "zarr.json").exists()

    def missing(self, model: str, step: int, datasets: list[str], source: str = "",
                log: Callable[[str], None] = lambda msg: None) -> list[str]:
        """The datasets of (model, step) still to score: absent cells, and damaged ones (reported and
        removed). Cells scored from other weights (`source`) are refused: another model, same name."""
        out = []
        for d in datasets:
            path = self.cell_path(model, step, d)
            if not self.has_cell(model, step, d):
                out.append(d)
            elif what := self.damage(path):
                log(f"{model} step {step} {d}: damaged cell ({what}); rescoring it")
                self.discard(path)
                out.append(d)
            elif source and (stored := _stored(path, "source")).startswith(_PARTIAL_DIGEST):
                # scored before local digests covered every byte: nothing says the weights are the same
                log(f"{model} step {step} {d}: scored before whole-file weight digests; rescoring it")
                self.discard(path)
                out.append(d)
            elif source and stored and stored != source:
                raise StoreError(f"{self.path} holds {model} step {step} scored from other weights "
                                 f"({stored}; this checkpoint's are {source}): another model under the "
                                 "same name. Score it into another --out, or rename its folder")
        return out

    def dataset_source(self, name: str) -> str:
        """The calibration source the store's cells of set `name` were read from ("" if none say)."""
        for path in sorted((self.path / "cells").glob(f"*/{_key(name)}/step-*")):
            if (path / "zarr.json").exists() and (stored := _stored(path, "calibration_source")):
                return stored
        return ""

    def damage(self, path: Path) -> str:
        """"" for a sound cell, else what is wrong with it (a file missing or of another size)."""
        record = path / COMPLETE
        if not record.exists():  # written before the record existed: the scores must read back
            return "" if (path / "zarr.json").exists() and _legacy_readable(path) else "unreadable"
        for name, size in json.loads(record.read_text()).items():
            f = path / name
            if not f.exists() or f.stat().st_size != size:
                return f"{name} {'missing' if not f.exists() else 'truncated'}"
        return ""

    def discard(self, path: Path) -> None:
        """Remove a damaged cell so it is rescored (moved aside first: readers never see half of it)."""
        aside = path.parent / f".{path.name}.damaged-{uuid.uuid4().hex[:8]}"
        os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)

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
        try:
            with atomic_dir(final) as tmp:
                cell.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=False)
                sizes = {str(p.relative_to(tmp)): p.stat().st_size
                         for p in sorted(tmp.rglob("*")) if p.is_file()}
                (tmp / COMPLETE).write_text(json.dumps(sizes))
        except OutputError:  # a concurrent writer finished the same cell first
            return False
        return True

    def cell_paths(self, kind: str = "cells") -> list[Path]:
        return sorted(p.parent for p in (self.path / kind).glob("*/*/step-*/zarr.json"))

    def written_cells(self, kind: str = "cells") -> list[Path]:
        """Every cell that was written whole: cell_paths, and those whose zarr.json was lost since
        (their completion record says they were written; `damage` names what is gone)."""
        marked = {p.parent for p in (self.path / kind).glob(f"*/*/step-*/{COMPLETE}")}
        return sorted(marked | set(self.cell_paths(kind)))

    def clean_partial(self) -> int:
        """Remove this host's temporary cells left by processes that no longer run."""
        before = self._partials()
        for kind in ("cells", "orders"):
            for folder in (self.path / kind).glob("*/*"):
                for stale in {p.name.split(".tmp-")[0][1:] for p in folder.glob(".step-*.tmp-*")}:
                    clean_stale(folder / stale)
        return before - self._partials()

    def _partials(self) -> int:
        return sum(1 for kind in ("cells", "orders") for _ in (self.path / kind).glob("*/*/.step-*.tmp-*"))


# the local digest of name, size and first and last MiB (until issue 19): it missed changes mid-file
_PARTIAL_DIGEST = "files:"


def _stored(path: Path, name: str) -> str:
    """A scalar string a cell records (`source`, `calibration_source`); "" for cells written before
    it was recorded."""
    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    return str(group[name][()]) if name in group else ""


def _legacy_readable(path: Path) -> bool:
    try:
        ds = xr.open_zarr(str(path), consolidated=False, zarr_format=3)
        var = next(v for v in ds.data_vars if ds[v].ndim > 0)  # a metric (or drop_order), not provenance
        return bool(ds[var].notnull().any())
    except Exception:  # noqa: BLE001 - any read failure is damage
        return False
