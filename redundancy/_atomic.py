"""Nothing lost: the one place where the toolkit's outputs are written.

- `atomic_dir(final)`: build a folder under a temporary name beside `final` (it holds the
  `.incomplete` marker until done), then rename it into place. A kill at any instant leaves either
  the old `final`, or the new one, plus at most a temporary folder that `clean_stale` removes and
  no reader accepts.
- `atomic_file(path, data)`: the same for one file (write, fsync, rename).
- `locked(path)`: an inter-process lock (filelock) around a read-modify-write.
- `check_output(out, sources, overwrite, kind)`: an output never replaces or nests with its input,
  never replaces or writes into another kind of store or output (`_stores.store_kind`), and an
  existing output of its own kind is only replaced when asked.

Readers never come here: reading takes no lock and creates no file (stores may be read-only).
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ._stores import describe, store_kind
from .errors import OutputError

INCOMPLETE = ".incomplete"  # inside a folder that is still being written
_HOST = socket.gethostname()


def _tmp_name(name: str) -> str:
    return f".{name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes `final` (replacing it if `overwrite`)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = final.parent / _tmp_name(final.name)
    tmp.mkdir()
    (tmp / INCOMPLETE).touch()
    try:
        yield tmp
        (tmp / INCOMPLETE).unlink(missing_ok=True)  # a writer in mode "w" may have cleared it
        _publish(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.is_dir() and not final.is_symlink() and not any(final.iterdir()):
        try:  # an empty folder (the --out a user made) holds nothing: a rename replaces it, and fails
            os.rename(tmp, final)  # if another process filled it meanwhile (then: as below)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise OutputError(f"{final} appeared while it was being written (another process?); "
                              "kept it as it was")
        if final.is_dir() and not final.is_symlink() and _exchange(tmp, final):
            # one step: `final` is the new folder, `tmp` the old one (a temporary name, which
            # clean_stale removes if we are killed before the next line)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        aside = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, aside)  # a kill right here leaves `aside`, which clean_stale puts back
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
        return
    try:
        os.rename(tmp, final)
    except OSError as exc:  # another process published `final` between the check and the rename
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise OutputError(f"{final} appeared while it was being written (another process?); "
                          "kept it as it was") from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE), so that no instant sees
    neither; False where the system or file system lacks it (the caller then renames twice)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def clean_stale(final: Path) -> None:
    """Remove temporary folders of `final` left by dead processes of this host; restore a
    replaced `final` whose replacement never arrived."""
    for p in final.parent.glob(f".{final.name}.tmp-{_HOST}-*"):
        if is_stale(p):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for old in final.parent.glob(f".{final.name}.old-*"):
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, final)


def is_stale(tmp: Path) -> bool:
    """True for a temporary name (`_tmp_name`) of a process of this host that no longer runs."""
    host_pid = tmp.name.split(".tmp-", 1)[-1].rsplit("-", 2)
    return (len(host_pid) == 3 and host_pid[0] == _HOST and host_pid[1].isdigit()
            and not _alive(int(host_pid[1])))


def atomic_file(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one (temporary files
    of `path` that killed writers left are removed first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = path.parent / _tmp_name(path.name)
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


@contextmanager
def locked(path: str | Path, timeout: float = 600) -> Iterator[None]:
    """Hold `path`.lock, an inter-process lock released even when the holder is killed (timeout < 0:
    wait for as long as it takes)."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path.with_name(path.name + ".lock")), timeout=timeout):
            yield
    except Timeout:
        raise OutputError(f"{path} stayed locked by another process for {timeout:.0f} s; "
                          "is another command writing it? Run again when it is done") from None


# what each writer may replace (with --overwrite) or write into: a model writer (kind None: drop,
# quantize) a model folder; pure block drops are saved as a stock checkpoint, indistinguishable from
# one, so a checkpoint is among them (an input checkpoint is still refused: it is a source)
_OWN = {None: ("dropped", "quantized", "checkpoint")}


def check_output(out: str | Path, sources: Sequence[str | Path], overwrite: bool = False,
                 kind: str | None = None) -> Path:
    """Check `out` before anything is written; returns it as a Path.

    `kind` is what the caller writes (a `_stores.store_kind` name: "results", "figures", "study"...;
    None: a model folder, dropped or quantized). Raises OutputError for an `out` equal to, inside or
    containing a source; holding another kind of store or output, or a file or folder this toolkit did
    not write (never replaced or written into, `overwrite` or not); holding one of its own kind
    without `overwrite`.
    """
    out = Path(out)
    o = out.resolve()
    for src in sources:
        s = Path(src).resolve()
        how = "is" if o == s else "is inside" if s in o.parents else "contains" if o in s.parents else None
        if how:
            raise OutputError(f"--out {out} {how} the input {src}; write the output elsewhere "
                              "(an output never replaces its input)")
    found = store_kind(o)
    if found == "empty":
        return out
    if found not in _OWN.get(kind, (kind,)):
        what = "a model" if kind is None else describe(kind)
        raise OutputError(f"--out {out} is {describe(found, o)}; writing {what} there would replace or "
                          "mix with it, --overwrite or not: choose another --out")
    if not overwrite:
        raise OutputError(f"--out {out} exists and is not empty; choose another folder, or pass "
                          "--overwrite to replace it")
    return out


def is_incomplete(folder: str | Path) -> bool:
    """True for a folder still being written, or left half-written by a killed process."""
    folder = Path(folder)
    return (folder / INCOMPLETE).exists() or folder.name.startswith(".") and ".tmp-" in folder.name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
