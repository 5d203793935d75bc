"""Nothing lost: the one place where the toolkit's outputs are written.

- `atomic_dir(final)`: build a folder under a temporary name beside `final` (it holds the
  `.incomplete` marker until done), then rename it into place. A kill at any instant leaves either
  the old `final`, or the new one, plus at most a temporary folder that `clean_stale` removes and
  no reader accepts.
- `atomic_file(path, data)`: the same for one file (write, fsync, rename).
- `locked(path)`: an inter-process lock (filelock) around a read-modify-write.
- `check_output(out, sources, overwrite)`: an output never replaces or nests with its input, and an
  existing output is only replaced when asked.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

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
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise OutputError(f"{final} appeared while it was being written (another process?); "
                              "kept it as it was")
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


def clean_stale(final: Path) -> None:
    """Remove temporary folders of `final` left by dead processes of this host; restore a
    replaced `final` whose replacement never arrived."""
    for p in final.parent.glob(f".{final.name}.tmp-{_HOST}-*"):
        pid = p.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for old in final.parent.glob(f".{final.name}.old-*"):
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, final)


def atomic_file(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def check_output(out: str | Path, sources: Sequence[str | Path], overwrite: bool = False) -> Path:
    """Refuse an `out` equal to, inside or containing a source, or existing and not empty without
    `overwrite`. Returns `out` as a Path."""
    out = Path(out)
    o = out.resolve()
    for src in sources:
        s = Path(src).resolve()
        how = "is" if o == s else "is inside" if s in o.parents else "contains" if o in s.parents else None
        if how:
            raise OutputError(f"--out {out} {how} the input {src}; write the output elsewhere "
                              "(an output never replaces its input)")
    if o.is_file() or (o.is_dir() and any(o.iterdir())):
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
