"""A cube store: a zarr v3 group whose cells are written whole, checksummed and indexed.

Layout (format 2): STORE/zarr.json (root attributes: format, settings); STORE/cells/<model>/<dataset>/
step-<step>/ (one zarr group per cell: `_cellio`) and STORE/orders/… (dropping orders); STORE/index/
(one record per cell: `_index`). A cell is published whole (`_backend.publish`: a folder renamed into
place, or on object storage a claim, the files, then `.complete.json`), then recorded in the index.
`.complete.json` holds the cell's labels and every file's size and xxh3 digest; the index record holds
the digests a reader checks, so changed bytes (a flipped byte, an edited `zarr.json`, a cell copied
or renamed over another) are refused when read and reported by `check`, never read as valid.

Format 1 (cubes written before): provenance as arrays, sizes only, no index. They open as they are
(each cell read through xarray); `check --repair` or the first `score` into one converts them.
"""
from __future__ import annotations

import functools
import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from .._atomic import clean_stale
from .._stores import CUBE_FORMAT, CUBE_FORMAT_1, describe, store_kind
from ..errors import StoreError
from . import _index
from ._backend import CLAIM, COMPLETE, backend_for, is_url
from ._cellio import CELL_FORMAT, decode, digest, encode, make_record
from ._schema import PROVENANCE, SETTINGS_KEYS, settings_diff

# zarr lists a group's folder and warns about any file that is not zarr's own: ours are expected
warnings.filterwarnings("ignore", message=r"Object at \.complete\.json is not recognized")
warnings.filterwarnings("ignore", message=r"Object at \.claim is not recognized")
KINDS = ("cells", "orders")
_COMPACT_EVERY = 64  # writes between two looks at the index's segment count


@functools.lru_cache(maxsize=65536)
def _key(name: str) -> str:
    """A folder name for a model or dataset name (the real name lives in the cell's labels)."""
    return re.sub(r"[^A-Za-z0-9._-]", lambda m: f"~{ord(m.group()):02x}", name)


class CubeStore:
    """Writes and finds cells of one cube; create with `CubeStore.open(location, settings)`.

    `location` is a local path or an object-store URL (s3://bucket/prefix: `_backend`). `path` is the
    location as given (a Path for a local store)."""

    def __init__(self, location: str | Path) -> None:
        self.url = is_url(location)
        self.path: Any = str(location).rstrip("/") if self.url else Path(location)
        self.backend = backend_for(self.path)
        self._records: _index.Records | None = None
        self._root: dict[str, Any] | None = None
        self._writes = 0

    @classmethod
    def open(cls, location: str | Path, settings: dict[str, Any] | None = None) -> "CubeStore":
        """Open or create the store; refuse a non-cube location or other calibration settings.
        `settings`: the calibration settings (SETTINGS_KEYS) the cells are scored with; None opens an
        existing cube as it is. Raises StoreError (the location holds something other than a cube or
        nothing, other settings, no cube yet and no settings given, an unreadable root, an object store
        that cannot be reached or needs obstore)."""
        store = cls(location)
        store._check_path()
        if store.root() is not None:
            stored = store.settings()
            if settings is not None and (diff := settings_diff(stored, settings)):
                raise StoreError(f"{store.path} holds scores made with other calibration settings "
                                 f"({'; '.join(diff)}); write to another --out or use its settings")
        else:
            if settings is None:
                raise StoreError(f"{store.path} is not a cube yet: score something into it first")
            store._create(settings)
        return store

    # --- the root --------------------------------------------------------------------------------------

    def root(self) -> dict[str, Any] | None:
        """The root group's attributes, None where there is no root yet (read once: only `repair`
        changes it). Raises StoreError (an unreadable zarr.json; an object store that cannot be read)."""
        if self._root is None:
            blob = self.backend.get("zarr.json")
            if blob is None:
                return None
            try:
                self._root = json.loads(blob).get("attributes") or {}
            except ValueError:
                raise StoreError(f"{self.path}/zarr.json is unreadable; it is the cube's root") from None
        return self._root

    def format(self) -> int:
        """1 for a cube written before format 2 (no index, sizes only), else 2. Raises what `root` raises."""
        return 1 if (self.root() or {}).get("format") == CUBE_FORMAT_1 else 2

    def _root_bytes(self, settings: dict[str, Any]) -> bytes:
        return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
            "format": CUBE_FORMAT, "settings": {k: settings[k] for k in SETTINGS_KEYS}}}).encode()

    def _create(self, settings: dict[str, Any]) -> None:
        """The root group with its settings (a concurrent creator may win: then its settings must agree)."""
        if not self.backend.put_new("zarr.json", self._root_bytes(settings)):
            if diff := settings_diff(self.settings(), settings):
                raise StoreError(f"{self.path} was just created with other calibration settings "
                                 f"({'; '.join(diff)}); write to another --out") from None

    def _check_path(self) -> None:
        """Raises StoreError where the location holds anything but a cube or nothing: a results store,
        a model, figures, a zarr store of something else, a file, a folder of other files (all kept)."""
        if self.url:
            root = self.backend.get("zarr.json")
            fmt = None if root is None else (json.loads(root).get("attributes") or {}).get("format")
            if root is None and self.backend.children(""):
                raise StoreError(f"{self.path} holds objects but no cube; nothing in it was changed: "
                                 "choose another --out")
            if root is not None and fmt not in (CUBE_FORMAT, CUBE_FORMAT_1):
                raise StoreError(f"{self.path} is a zarr store written by something else, not a redundancy "
                                 "cube; nothing in it was changed: choose another --out")
            return
        found = store_kind(self.path)
        if found not in ("cube", "empty"):
            raise StoreError(f"{self.path} is {describe(found, self.path)}, not a redundancy cube; "
                             "nothing in it was changed: choose another --out")

    def settings(self) -> dict[str, Any]:
        """The calibration settings the cube was created with ({SETTINGS_KEYS: value}). Raises what
        `root` raises; KeyError from Python on a store without a root (`open` makes one first)."""
        return (self.root() or {})["settings"]

    # --- cells -----------------------------------------------------------------------------------------

    def prefix(self, model: str, step: int, dataset: str, *, kind: str = "cells") -> str:
        """The key prefix of a cell. `kind` is "cells" (scores) or "orders" (dropping orders).
        Raises nothing on purpose."""
        return f"{kind}/{_key(model)}/{_key(dataset)}/step-{step:012d}"

    def cell_path(self, model: str, step: int, dataset: str, *, kind: str = "cells") -> Path:
        """A local store's cell folder. Raises nothing on purpose."""
        return self.path / self.prefix(model, step, dataset, kind=kind)

    def has_cell(self, model: str, step: int, dataset: str, *, kind: str = "cells") -> bool:
        """True when the cell was written completely (its `.complete.json`, or for format-1 cells
        written before that record existed, its zarr.json). Raises StoreError where an object store cannot be
        reached or refuses the request."""
        prefix = self.prefix(model, step, dataset, kind=kind)
        return self.backend.exists(f"{prefix}/{COMPLETE}") or \
            self.format() == 1 and self.backend.exists(f"{prefix}/zarr.json")

    def records(self, *, refresh: bool = False) -> _index.Records:
        """The index: (kind, model, step, dataset) -> the cell's record (`_cellio.make_record`).
        Raises StoreError (an index object unreadable or changed since written, an index that kept
        changing while read, an object store that cannot be read)."""
        if self._records is None or refresh:
            self._records = _index.read(self.backend)
        return self._records

    def missing(self, model: str, step: int, datasets: list[str], *, source: str = "",
                log: Callable[[str], None] = lambda msg: None) -> list[str]:
        """The datasets of (model, step) still to score: absent cells, and damaged ones (reported and
        removed). A sound cell the index lacks (its writer was killed between the two) is recorded.
        Cells scored from other weights (`source`) are refused: another model, same name.
        Raises StoreError (cells of other weights; an unreadable index; StoreError where an object store
        cannot be reached or refuses the request)."""
        out = []
        for d in datasets:
            prefix = self.prefix(model, step, d)
            if not self.has_cell(model, step, d):
                out.append(d)
            elif what := self.damage(prefix, expect=("cells", model, step, d), full=True):
                log(f"{model} step {step} {d}: damaged cell ({what}); rescoring it")
                self.discard(prefix)
                out.append(d)
            elif source and (stored := self._stored(prefix, "source")).startswith(_PARTIAL_DIGEST):
                # scored before local digests covered every byte: nothing says the weights are the same
                log(f"{model} step {step} {d}: scored before whole-file weight digests; rescoring it")
                self.discard(prefix)
                out.append(d)
            elif source and stored and stored != source:
                raise StoreError(f"{self.path} holds {model} step {step} scored from other weights "
                                 f"({stored}; this checkpoint's are {source}): another model under the "
                                 "same name. Score it into another --out, or rename its folder")
        return out

    def _stored(self, prefix: str, name: str) -> str:
        """A provenance string of a stored cell ("" for cells written before it was recorded)."""
        labels = self._labels(prefix)
        if labels is not None and (r := self.records().get(labels)) is None:
            r = self.records(refresh=True).get(labels)
        if labels is not None and r is not None:
            return r["provenance"].get(name, "")
        cell = self._read_prefix(prefix)
        return str(cell[name].item()) if name in cell else ""

    def dataset_source(self, name: str) -> str:
        """The calibration source the store's cells of set `name` were read from ("" if none say).
        Raises what `records` raises."""
        if self.format() == 2:
            frame = self.records().frame
            if "p/calibration_source" not in frame:
                return ""
            rows = frame[(frame["kind"] == "cells") & (frame["dataset"] == name)]
            sources = rows.sort_values(["model", "step"])["p/calibration_source"]
            return next((str(s) for s in sources if s), "")
        for prefix in self._listed("cells"):
            if prefix.split("/")[2] == _key(name) and (stored := self._stored(prefix, "calibration_source")):
                return stored
        return ""

    def damage(self, prefix: str | Path, *, expect: tuple[str, str, int, str] | None = None,
               full: bool = False, listing: dict[str, int] | None = None) -> str:
        """"" for a sound cell, else what is wrong with it: a file missing or of another size, labels
        of another cell (copied or renamed), not what the index recorded, or (`full`: every byte read)
        other bytes. `expect`: the (kind, model, step, dataset) its place says it holds; `listing`: the
        cell's {key: size} where the caller listed it already. Damage is the answer, not an error.
        Raises only what `records` raises (StoreError: an unreadable index, an object store that cannot
        be reached or refuses the request)."""
        prefix = self._as_prefix(prefix)
        blob = self.backend.get(f"{prefix}/{COMPLETE}")
        if blob is None:  # format 1 before the record existed: the scores must read back
            return "" if self.backend.exists(f"{prefix}/zarr.json") and self._legacy_readable(prefix) \
                else "unreadable"
        try:
            complete = json.loads(blob)
        except ValueError:
            return f"{COMPLETE} unreadable"
        if complete.get("format") != CELL_FORMAT:  # format 1: {file: size}
            return _sizes_differ(self.backend, prefix, complete, listing)
        labels = (complete["kind"], complete["model"], complete["step"], complete["dataset"])
        if expect and tuple(labels) != tuple(expect) \
                or prefix != self.prefix(*labels[1:3], labels[3], kind=labels[0]):
            return f"holds {labels[1]} step {labels[2]} {labels[3]} (copied or renamed here)"
        files = {k: v[0] for k, v in complete["files"].items()}
        listing = listing if listing is not None else self.backend.list(prefix + "/")
        if what := _sizes_differ(self.backend, prefix, files, listing):
            return what
        extra = sorted(k[len(prefix) + 1:] for k in listing
                       if k[len(prefix) + 1:] not in files and k[len(prefix) + 1:] not in (COMPLETE, CLAIM))
        if extra:
            return f"holds {extra[0]}, which was not written with it"
        recorded = self.records().complete_digest(labels)
        if recorded is not None and recorded != digest(blob):
            if (recorded := self.records(refresh=True).complete_digest(labels)) and recorded != digest(blob):
                return "not the cell the index recorded (replaced by another?)"
        if full:
            return self._bytes_differ(prefix, complete)
        return ""

    def _bytes_differ(self, prefix: str, complete: dict[str, Any]) -> str:
        """"" if every file of a format-2 cell has the digest `complete` records, else which does not."""
        names = sorted(complete["files"])
        for name, data in zip(names, self.backend.get_many([f"{prefix}/{n}" for n in names])):
            if data is None or digest(data) != complete["files"][name][1]:
                return f"{name} {'missing' if data is None else 'changed since it was written'}"
        return ""

    def discard(self, prefix: str | Path) -> None:
        """Remove a damaged cell so it is rescored (no reader sees half of it). Raises StoreError where an
        object store cannot be reached or refuses the request."""
        self.backend.discard(self._as_prefix(prefix))

    def _labels(self, prefix: str) -> tuple[str, str, int, str] | None:
        """(kind, model, step, dataset) a format-2 cell's `.complete.json` records; None otherwise."""
        try:
            c = json.loads(self.backend.get(f"{prefix}/{COMPLETE}") or b"{}")
        except ValueError:
            return None
        if c.get("format") != CELL_FORMAT:
            return None
        return (c["kind"], c["model"], int(c["step"]), c["dataset"])

    def _as_prefix(self, prefix: str | Path) -> str:
        if isinstance(prefix, Path):
            return prefix.relative_to(self.path).as_posix()
        return prefix

    def read_cell(self, model: str, step: int, dataset: str, *, kind: str = "cells") -> xr.Dataset:
        """One stored cell, loaded into memory, its bytes checked against what its writer recorded.
        Raises StoreError for a changed or missing cell."""
        return self._read_prefix(self.prefix(model, step, dataset, kind=kind))

    def _read_prefix(self, prefix: str) -> xr.Dataset:
        files = self._files(prefix)
        blob = files.get(COMPLETE)
        if blob is not None and (complete := json.loads(blob)).get("format") == CELL_FORMAT:
            for name, (size, want) in complete["files"].items():
                if name not in files or digest(files[name]) != want:
                    what = "is missing" if name not in files else "changed since it was written"
                    raise StoreError(f"{self.path}/{prefix}: {name} {what}"
                                     f"; `redundancy check --repair {self.path}` removes it, "
                                     "then score again")
        return decode(files)

    def _files(self, prefix: str) -> dict[str, bytes]:
        names = [k for k in self.backend.list(prefix + "/")]
        blobs = self.backend.get_many(names)
        return {k[len(prefix) + 1:]: b for k, b in zip(names, blobs) if b is not None}

    def write_cell(self, cell: xr.Dataset, *, kind: str = "cells") -> bool:
        """Write one cell whole and record it in the index; False if it was already there (kept as it
        was). Raises StoreError on a format-1 cube (convert it first: `check --repair`)."""
        if self.format() == 1:
            raise StoreError(f"{self.path} is a format-1 cube; `redundancy check --repair {self.path}` "
                             "converts it (every value kept), then write to it")
        files, record = encode(cell, kind)
        prefix = self.prefix(record["model"], record["step"], record["dataset"], kind=kind)
        if not self.backend.publish(prefix, files):
            self._record_if_missing(prefix)  # its writer may have died before recording it
            return False
        _index.add(self.backend, [record])
        if self._records is not None:
            self._records.remember(record)
        self._writes += 1
        if self._writes % _COMPACT_EVERY == 0:
            _index.compact(self.backend)
        return True

    def _record_if_missing(self, prefix: str) -> None:
        """Record a sound cell found already there that the index lacks: its writer was killed between
        publishing it and recording it, and no rerun would otherwise record it (a step missing from
        `open_cube`). A duplicate record of a concurrent writer's cell is harmless: records are
        keyed by labels, the last kept."""
        if self._labels(prefix) not in self.records(refresh=True) and not self.damage(prefix, full=True):
            _index.add(self.backend, [self._record_of(prefix)])

    def prepare(self, log: Callable[[str], None] = lambda msg: None) -> None:
        """Before a run writes: remove this host's dead writers' temporary cells, convert a format-1
        cube (saying so), and record sound cells the index lacks. Raises what `repair` and `adopt` raise."""
        self.clean_partial()
        if self.format() == 1:
            counts = self.repair(log=log)
            log(f"{self.path}: converted to cube format 2 (checksums and an index): {counts['converted']} "
                f"cells converted, every value kept; {counts['removed']} damaged removed")
        self.adopt(log)

    def compact(self) -> None:
        """Merge the index's segments into one base (writers call it at the end of a run). Raises what
        `records` raises."""
        if self.format() == 2:
            _index.compact(self.backend, force=True)

    def adopt(self, log: Callable[[str], None] = lambda msg: None) -> int:
        """Record every sound cell the index lacks (a writer killed between writing it and recording
        it; cells copied in by hand); returns how many. Raises what `records` raises."""
        records = self.records(refresh=True)
        new = []
        for kind in KINDS:
            for prefix in self._listed(kind):
                if self._labels(prefix) in records or self.damage(prefix, full=True):
                    continue
                new.append(self._record_of(prefix))
                log(f"{prefix}: recorded in the index")
        _index.add(self.backend, new)
        self._records = None
        return len(new)

    def _record_of(self, prefix: str) -> dict[str, Any]:
        files = self._files(prefix)
        complete = json.loads(files[COMPLETE])
        cell = decode(files)
        provenance = {k: str(cell[k].item()) for k in _provenance_keys(cell)}
        return make_record(complete["kind"], cell, complete=complete, complete_digest=digest(files[COMPLETE]),
                           provenance=provenance)

    # --- listing ---------------------------------------------------------------------------------------

    def _listed(self, kind: str = "cells", listing: dict[str, int] | None = None) -> list[str]:
        """Prefixes of every cell written whole (its `.complete.json`; in a format-1 cube also a
        zarr.json: cells written before that record), temporary and set-aside folders excluded."""
        marks = (COMPLETE, "zarr.json") if self.format() == 1 else (COMPLETE,)
        out = set()
        for key in (listing if listing is not None else self.backend.list(f"{kind}/")):
            parts = key.split("/")
            if len(parts) >= 5 and parts[3].startswith("step-") and parts[4] in marks:
                out.add("/".join(parts[:4]))
        return sorted(out)

    def half_written(self, kind: str = "cells", *, listing: dict[str, int] | None = None) -> list[str]:
        """Cells whose writer was killed before `.complete.json` (object stores, where there is no
        rename): never read; the next writer takes the claim over and writes them whole. Raises StoreError
        where an object store cannot be reached or refuses the request."""
        if self.format() == 1:
            return []
        listed = listing if listing is not None else self.backend.list(f"{kind}/")
        started = {k.rsplit("/", 1)[0] for k in listed if k.endswith("/" + CLAIM)}
        return sorted(p for p in started if f"{p}/{COMPLETE}" not in listed)

    def foreign(self, kind: str = "cells", *, listing: dict[str, int] | None = None) -> list[str]:
        """Objects under `kind/` that belong to no cell: a zarr group copied in, stray files. Raises
        StoreError where an object store cannot be reached or refuses the request."""
        out = set()
        for key in (listing if listing is not None else self.backend.list(f"{kind}/")):
            parts = key.split("/")
            if any(p.startswith(".") for p in parts[1:4]):
                continue  # a writer's temporary or set-aside folder: `clean_partial` removes those
            if len(parts) < 5 or not re.fullmatch(r"step-\d{12}", parts[3]):
                out.add(key if len(parts) <= 4 else "/".join(parts[:4]))  # a stray file, or a folder
        cells = {"/".join(p.split("/")[:3]) for p in self._listed(kind, listing)}
        folders = {"/".join(p.split("/")[:3]) for p in out if len(p.split("/")) >= 4}
        out = {p for p in out if "/".join(p.split("/")[:3]) in cells} | (folders - cells)  # whole folder
        return [p for p in sorted(out) if not any(p.startswith(q + "/") for q in out)]  # the outermost

    def cell_paths(self, kind: str = "cells") -> list[Path]:
        """A local store's cell folders that hold a zarr group (written whole, or their damage shows).
        Raises nothing on purpose."""
        return sorted(p.parent for p in (self.path / kind).glob("*/*/step-*/zarr.json"))

    def written_cells(self, kind: str = "cells") -> list[str]:
        """Prefixes of every cell that was written whole: `damage` names what is gone since. Raises
        StoreError where an object store cannot be reached or refuses the request."""
        return self._listed(kind)

    def clean_partial(self) -> int:
        """Remove this host's temporary cells left by processes that no longer run (local stores:
        an object store's half-written cells hold a claim that the next writer takes over); returns how
        many. Raises nothing on purpose."""
        if self.url:
            return 0
        before = self._partials()
        for kind in KINDS:
            for folder in (self.path / kind).glob("*/*"):
                for stale in {p.name.split(".tmp-")[0][1:] for p in folder.glob(".step-*.tmp-*")}:
                    clean_stale(folder / stale)
        return before - self._partials()

    def _partials(self) -> int:
        return sum(1 for kind in KINDS for _ in (self.path / kind).glob("*/*/.step-*.tmp-*"))

    def _legacy_readable(self, prefix: str) -> bool:
        try:
            ds = self._read_prefix(prefix)
            var = next(v for v in ds.data_vars if ds[v].ndim > 0)  # a metric (or drop_order)
            return bool(ds[var].notnull().any())
        except Exception:  # noqa: BLE001 - any read failure is damage
            return False

    # --- format 1 -> 2 and repairs --------------------------------------------------------------------

    def repair(self, log: Callable[[str], None] = print) -> dict[str, int]:
        """Convert a format-1 cube to format 2, remove damaged cells (the next score rescores them),
        record unindexed sound cells, and rebuild the index from the cells. Every sound value is kept:
        each converted cell is read back and compared before it replaces the old one. Returns counts.
        Raises StoreError (converting a cell would change a value: it is left as it is; StoreError where an
        object store cannot be reached or refuses the request)."""
        counts = {"converted": 0, "removed": 0, "kept": 0}
        old = self.format() == 1
        self._records = _index.Records(_index.to_frame([]))  # rebuilt from the cells: the old one unread
        records = []
        for kind in KINDS:
            for prefix in self._listed(kind):
                if what := self.damage(prefix, full=True):
                    log(f"{prefix}: {what}; removed (the next score rescores it)")
                    self.discard(prefix)
                    counts["removed"] += 1
                    continue
                complete = json.loads(self.backend.get(f"{prefix}/{COMPLETE}") or b"{}")
                if complete.get("format") == CELL_FORMAT:
                    records.append(self._record_of(prefix))
                    counts["kept"] += 1
                    continue
                records.append(self._convert(prefix, kind))
                counts["converted"] += 1
        for prefix in self.foreign("cells") + self.foreign("orders"):
            log(f"{prefix}: not a cell of this cube (left as it is; open_cube ignores it)")
        _index.rebuild(self.backend, records)
        if old:
            self.backend.put("zarr.json", self._root_bytes(self.settings()))
        self._records = self._root = None
        return counts

    def _convert(self, prefix: str, kind: str) -> dict[str, Any]:
        cell = self._read_prefix(prefix)
        files, record = encode(cell, kind)
        back = decode(files)
        for v in cell.variables:
            if not np.array_equal(np.asarray(cell[v].values,
                                             dtype=object if cell[v].dtype == object else None),
                                  np.asarray(back[v].values), equal_nan=cell[v].dtype.kind == "f"):
                raise StoreError(f"{self.path}/{prefix}: converting it would change {v}; left as it is")
        self.backend.replace(prefix, files)
        return record


# the local digest of name, size and first and last MiB (until issue 19): it missed changes mid-file
_PARTIAL_DIGEST = "files:"


def _provenance_keys(cell: xr.Dataset) -> list[str]:
    return [k for k in PROVENANCE if k in cell]


def _sizes_differ(backend: Any, prefix: str, sizes: dict[str, int],
                  listing: dict[str, int] | None = None) -> str:
    listed = listing if listing is not None else backend.list(prefix + "/")
    for name, size in sizes.items():
        got = listed.get(f"{prefix}/{name}")
        if got is None or got != size:
            return f"{name} {'missing' if got is None else 'truncated'}"
    return ""
