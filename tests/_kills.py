"""Killing a writer process at an instant inside its work, bounded in time."""
from __future__ import annotations

import subprocess
import time


def kill_after(proc: subprocess.Popen, lines: int, extra: float) -> None:
    """SIGKILL `proc` `extra` seconds after it printed `lines` lines (one per cell written): an instant
    inside the next cell's write, wherever that is. Bounded: 120 s at most."""
    deadline = time.time() + 120
    for _ in range(lines):
        if not proc.stdout.readline() or time.time() > deadline:
            break
    time.sleep(extra)
    proc.kill()
    proc.wait(timeout=30)
