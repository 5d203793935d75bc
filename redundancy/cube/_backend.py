"""Where a cube's bytes live: a local folder or an object store, behind one small set of operations.

Keys are '/'-separated paths relative to the store's root ("zarr.json", "cells/m/d/step-…/zarr.json").
Every write is whole or absent for a reader:

- `put(key, data)`: one object, replaced in one step (a local temporary file renamed; one PUT).
- `put_new(key, data)`: created only where absent, atomically (a local hard link, which fails on an
  existing name; S3's conditional PUT `If-None-Match: *`), so two writers never both win.
- `publish(prefix, files)`: a cell, all of its files or none, first writer wins. Locally the files are
  written into a temporary folder renamed into place (`_atomic.atomic_dir`). An object store has no
  rename: the writer first claims the cell (`put_new` of `.claim`), writes the files, then
  `.complete.json`, which readers and `has_cell` require; a claim left by a dead writer is taken over
  (same host and a process that no longer runs, or older than `CLAIM_TIMEOUT_S`).

Object stores are reached through obstore (`pip install 'redundancy[s3]'`): s3:// (and any
S3-compatible server through AWS_ENDPOINT_URL), gs://, az://, with credentials from the environment.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .._atomic import atomic_dir, atomic_file, is_stale
from ..errors import OutputError, StoreError

CLAIM = ".claim"
COMPLETE = ".complete.json"
CLAIM_TIMEOUT_S = 600.0  # a cell's files are written in well under a second once its scores exist
_URL_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "memory://")


def is_url(location: str | os.PathLike) -> bool:
    """True for an object-store URL (s3://bucket/prefix, gs://, az://), False for a local path."""
    return isinstance(location, str) and location.startswith(_URL_SCHEMES)


class Folder:
    """A store in a local (or network-mounted) folder."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"Folder({self.url!r})"

    def get(self, key: str) -> bytes | None:
        try:
            with open(f"{self.url}/{key}", "rb") as fh:  # a string path: pathlib costs more than the read
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.get(k) for k in keys]

    def exists(self, key: str) -> bool:
        return os.path.exists(f"{self.url}/{key}")

    def put(self, key: str, data: bytes) -> None:
        atomic_file(self.root / key, data)

    def put_new(self, key: str, data: bytes) -> bool:
        """Create `key` unless it exists (a whole temporary file hard-linked to its name: link fails
        on an existing name, so exactly one of two writers wins)."""
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.new-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        try:
            os.link(tmp, final)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def list(self, prefix: str) -> dict[str, int]:
        """{key: size} of every file under `prefix` ('' for all), temporary ones included."""
        out: dict[str, int] = {}
        stack = [(os.path.join(self.url, prefix), prefix.rstrip("/"))]
        while stack:
            folder, rel = stack.pop()
            try:
                entries = os.scandir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for e in entries:
                    key = f"{rel}/{e.name}" if rel else e.name
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append((e.path, key))
                        else:
                            out[key] = e.stat().st_size
                    except FileNotFoundError:  # removed while we listed
                        continue
        return out

    def children(self, prefix: str) -> list[str]:
        """Names directly under the folder `prefix`."""
        try:
            return sorted(os.listdir(self.root / prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def publish(self, prefix: str, files: dict[str, bytes]) -> bool:
        """Write a cell's files whole under `prefix`; False if it was there already (kept as it was)."""
        final = self.root / prefix
        if final.exists():
            return False
        try:
            with atomic_dir(final) as tmp:
                for name, data in files.items():
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / name).write_bytes(data)
        except OutputError:  # a concurrent writer finished the same cell first
            return False
        return True

    def replace(self, prefix: str, files: dict[str, bytes]) -> None:
        """Replace a cell's files in one step (a format conversion), the old cell kept until then."""
        with atomic_dir(self.root / prefix, overwrite=True) as tmp:
            for name, data in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)

    def discard(self, prefix: str) -> None:
        """Remove a cell (moved aside first: no reader sees half of it)."""
        path = self.root / prefix
        aside = path.parent / f".{path.name}.damaged-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)


class Bucket:
    """A store in an object store (obstore): s3://bucket/prefix and the other schemes obstore speaks."""

    def __init__(self, url: str, **options: str) -> None:
        try:
            import obstore
            from obstore.store import from_url
        except ImportError:
            raise StoreError(f"{url}: object storage needs obstore: pip install 'redundancy[s3]'") from None
        self._obstore = obstore
        self.url = url.rstrip("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if url.startswith("s3://") and endpoint:
            options.setdefault("endpoint", endpoint)
            options.setdefault("allow_http", "true")
        try:
            self.store = from_url(self.url, client_options={"allow_http": True} if
                                  options.pop("allow_http", None) else None, **options)
        except Exception as exc:  # noqa: BLE001 - obstore's configuration errors, as one line
            raise StoreError(f"{url}: cannot reach this object store ({_first_line(exc)}); check the URL "
                             "and the AWS_* / GOOGLE_* / AZURE_* environment") from None

    def __repr__(self) -> str:
        return f"Bucket({self.url!r})"

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self._obstore.get(self.store, key).bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise _store_error(self.url, key, exc) from None

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """Many small objects at once (requests in parallel; each one is a round trip)."""
        if len(keys) < 4:
            return [self.get(k) for k in keys]
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(self.get, keys))

    def exists(self, key: str) -> bool:
        try:
            self._obstore.head(self.store, key)
            return True
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001
            raise _store_error(self.url, key, exc) from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self._obstore.put(self.store, key, data)
        except Exception as exc:  # noqa: BLE001
            raise _store_error(self.url, key, exc) from None

    def put_new(self, key: str, data: bytes) -> bool:
        try:
            self._obstore.put(self.store, key, data, mode="create")
            return True
        except FileExistsError:
            return False
        except Exception as exc:  # noqa: BLE001
            if "exist" in str(exc).lower() or "precondition" in str(exc).lower():
                return False
            raise _store_error(self.url, key, exc) from None

    def delete(self, key: str) -> None:
        try:
            self._obstore.delete(self.store, key)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise _store_error(self.url, key, exc) from None

    def list(self, prefix: str) -> dict[str, int]:
        out = {}
        try:
            for batch in self._obstore.list(self.store, prefix=prefix.rstrip("/") or None):
                for meta in batch:
                    out[meta["path"]] = meta["size"]
        except Exception as exc:  # noqa: BLE001
            raise _store_error(self.url, prefix, exc) from None
        return out

    def children(self, prefix: str) -> list[str]:
        try:
            listed = self._obstore.list_with_delimiter(self.store, prefix=prefix.rstrip("/") or None)
        except Exception as exc:  # noqa: BLE001
            raise _store_error(self.url, prefix, exc) from None
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in listed["common_prefixes"]]
        return sorted(names + [m["path"].rsplit("/", 1)[-1] for m in listed["objects"]])

    def publish(self, prefix: str, files: dict[str, bytes]) -> bool:
        """Claim the cell, write its files, then `.complete.json` (last: what makes it a cell)."""
        if self.exists(f"{prefix}/{COMPLETE}") or not self._claim(prefix):
            return False
        self._write(prefix, files)
        return True

    def replace(self, prefix: str, files: dict[str, bytes]) -> None:
        """A conversion: the completion record goes first (readers of the old one then see a cell
        whose record no longer matches, i.e. damaged, never a mix read as valid), then the files,
        then the record again."""
        self.delete(f"{prefix}/{COMPLETE}")
        self._write(prefix, files)

    def _write(self, prefix: str, files: dict[str, bytes]) -> None:
        record = files.get(COMPLETE)
        others = [(k, v) for k, v in files.items() if k != COMPLETE]
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda kv: self.put(f"{prefix}/{kv[0]}", kv[1]), others))
        if record is not None:
            self.put(f"{prefix}/{COMPLETE}", record)
        self.delete(f"{prefix}/{CLAIM}")

    def _claim(self, prefix: str) -> bool:
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}).encode()
        for _ in range(3):  # bounded: a claim is taken over at most once per try
            if self.put_new(f"{prefix}/{CLAIM}", me):
                return True
            held = self.get(f"{prefix}/{CLAIM}")
            if held is None:
                continue  # released meanwhile: try again
            if not _dead(held):
                return False  # another live writer has it: it will publish the cell
            self.delete(f"{prefix}/{CLAIM}")  # a dead writer's: remove, then race for it fairly
        return False

    def discard(self, prefix: str) -> None:
        keys = list(self.list(prefix + "/"))
        rest = [k for k in keys if not k.endswith(f"/{COMPLETE}")]
        if f"{prefix}/{COMPLETE}" in keys:
            self.delete(f"{prefix}/{COMPLETE}")  # first: from here on no reader takes it as a cell
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(self.delete, rest))


def _dead(claim: bytes) -> bool:
    """A claim of a writer that no longer runs: this host and a dead process, or too old."""
    try:
        held = json.loads(claim)
        host, pid, at = held["host"], int(held["pid"]), float(held["at"])
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: nobody can be holding it
    if host == socket.gethostname():
        return is_stale(Path(f".x.tmp-{host}-{pid}-0"))
    return time.time() - at > CLAIM_TIMEOUT_S


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _store_error(url: str, key: str, exc: BaseException) -> StoreError:
    return StoreError(f"{url}/{key}: the object store failed ({type(exc).__name__}: {_first_line(exc)}); "
                      "check the credentials and the endpoint, then run again")


def backend_for(location: str | os.PathLike) -> Folder | Bucket:
    """The backend of a store location: an object-store URL, else a local path."""
    return Bucket(location) if is_url(location) else Folder(location)
