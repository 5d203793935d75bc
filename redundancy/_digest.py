"""What a weight file holds: a hash of all its bytes, kept in a small cache while the file is unchanged.

`file_digest(path)` hashes the whole file with xxh3-128 (about 8 GB/s from the page cache on one
core here, 15x blake2b: `python benchmarks/digest_cost.py`), so a tensor changed anywhere in a file
changes its digest. Hashing 14 GB on every listing of a series would still cost seconds per
checkpoint, so each digest is kept in `<cache root>/weight-digests.json` (the cache root of
_cache.py: $REDUNDANCY_CACHE, else ~/.cache/redundancy; never beside the weights, whose
folder may be read-only or someone else's input) under the file's resolved path, and reused while
its (size, mtime_ns, ctime_ns, inode, device) are unchanged.

ctime is in the key because no user program can set it: an in-place edit that keeps the size and
puts the old mtime back (os.utime, `touch -r`, rsync -t) still moves ctime, so it is rehashed. What
is not detected: an edit within the file system's timestamp granularity of the hash (guarded: a
file changed less than RACY_NS before it was hashed is not cached, as git treats "racily clean"
index entries), or on a file system that reports no ctime and keeps size and mtime; deleting the
cache file forces every digest to be recomputed.

The cache is written atomically (_atomic.atomic_file) under a file lock, merged with what another
process wrote meanwhile; when it cannot be written (read-only home, lock held too long), digests
are still computed, just not kept.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ._atomic import atomic_file, locked
from ._cache import cache_root
from .errors import OutputError

CACHE_NAME = "weight-digests.json"
CHUNK = 1 << 23  # bytes read per call: 8 MiB is past where larger reads stop helping (benchmark)
RACY_NS = 2_000_000_000  # the coarsest common timestamp granularity (FAT: 2 s; NFS, ext3: 1 s)
LOCK_TIMEOUT_S = 10  # a cache is an optimization: skip it rather than wait long for another writer


def cache_path() -> Path:
    """Where the digests are kept: under the toolkit's cache root (_cache.py)."""
    return cache_root() / CACHE_NAME


def hash_file(path: Path, chunk: int = CHUNK) -> str:
    """xxh3-128 of every byte of `path`, as 32 hex digits. Raises OSError when it cannot be read."""
    import xxhash

    h, buf = xxhash.xxh3_128(), bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:  # unbuffered readinto: no copy per chunk
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _key(st: os.stat_result) -> list[int]:
    """What must be unchanged for a cached digest to hold (see the module docstring)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _load(cache: Path) -> dict[str, dict]:
    """The cached entries {resolved path: {"key": [...], "xxh3_128": hex}}; {} when absent or unreadable
    (a damaged cache is rebuilt, never trusted)."""
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def content_digest(paths: list[Path]) -> str:
    """One short digest of several files' bytes, in the given order: "xxh3:" + 16 hex digits. What a
    calibration file's (or folder's) text is. A checkpoint's weights keep sources._checkpoint.local_digest
    (sizes included): stores record its values, so the two are not merged. Raises OSError."""
    import hashlib

    digests = file_digests(list(paths))
    joined = "\n".join(f"{Path(p).name}:{digests[p]}" for p in paths)
    return "xxh3:" + hashlib.sha256(joined.encode()).hexdigest()[:16]


def file_digests(paths: list[Path]) -> dict[Path, str]:
    """{path: xxh3-128 hex} for every file of `paths`, reusing cached digests of unchanged files and
    caching the new ones. Raises OSError when a file cannot be read (never for the cache)."""
    cache = cache_path()
    entries, out, new = _load(cache), {}, {}
    for path in paths:
        name, st = str(Path(path).resolve()), os.stat(path)
        hit = entries.get(name)
        if isinstance(hit, dict) and hit.get("key") == _key(st) and isinstance(hit.get("xxh3_128"), str):
            out[path] = hit["xxh3_128"]
            continue
        started = time.time_ns()
        out[path] = hash_file(path)
        after = os.stat(path)
        # kept only when the file did not change while it was read, nor just before (racy timestamps)
        if _key(after) == _key(st) and started - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS:
            new[name] = {"key": _key(st), "xxh3_128": out[path]}
    if new:
        _store(cache, new)
    return out


def _store(cache: Path, new: dict[str, dict]) -> None:
    """Merge `new` into the cache file under its lock, dropping entries of files that are gone or
    changed (the cache stays as small as the weights it describes). Never raises."""
    try:
        with locked(cache, timeout=LOCK_TIMEOUT_S):
            entries = {**_load(cache), **new}
            atomic_file(cache, json.dumps({k: v for k, v in entries.items() if _current(k, v)}, indent=0))
    except (OSError, OutputError):  # read-only or full cache folder, or another writer holds the lock
        pass


def _current(name: str, entry: object) -> bool:
    try:
        return isinstance(entry, dict) and entry.get("key") == _key(os.stat(name))
    except OSError:
        return False
