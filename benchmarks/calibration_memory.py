"""Peak memory and time of the calibration step against the calibration file's size.

    python benchmarks/calibration_memory.py                          # 1, 10, 100, 1000 MB; .txt and .jsonl
    python benchmarks/calibration_memory.py --sizes 1,10,100 --kinds txt --samples 128 --seq-len 2048
    python benchmarks/calibration_memory.py --dir /data/scratch      # where the files go (default: /tmp)

For each size and kind a file of realistic text is written (standard-library docstring lines,
shuffled, repeated to the size; .txt: one document, .jsonl: a record per paragraph), then
`calibration_tokens` packs it in a fresh process with the tiny demo tokenizer (the test suite's:
BPE, 300 ids, trained on the built-in sets). Printed per run: the process's peak resident set
(ru_maxrss of the child, after it exits), the part of it the calibration step added (VmHWM after
the step minus VmRSS before it, the imports and tokenizer excluded), the step's seconds, and the
fingerprint (the same for every size of one kind: the pool is drawn from the file's start). The
files are deleted after each size.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Optional

import typer

MB = 1_000_000
KINDS = ("txt", "jsonl")


def _lines(seed: int = 0) -> list[str]:
    """Prose lines of the standard library's docstrings (a few thousand), shuffled by `seed`."""
    from redundancy.calibration._corpora import stdlib_docstrings

    lines = [ln.strip() for doc in islice(stdlib_docstrings(), 400) for ln in doc.splitlines()]
    lines = [ln for ln in lines if len(ln) > 20]
    random.Random(seed).shuffle(lines)
    return lines


def _write(path: Path, size: int, kind: str, lines: list[str]) -> None:
    """`size` bytes (about) of `lines`, repeated, each round shuffled anew (cheap, and no window of
    the file repeats another): .txt as one document of paragraphs, .jsonl a record per paragraph."""
    rng, written = random.Random(1), 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size:
            rng.shuffle(lines)
            for i in range(0, len(lines), 8):
                para = "\n".join(lines[i:i + 8])
                text = json.dumps({"text": para}) + "\n" if kind == "jsonl" else para + "\n\n"
                written += fh.write(text)
                if written >= size:
                    break


def _status(key: str) -> int:
    """A figure of /proc/self/status in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _tokenizer():
    """The test suite's tiny tokenizer (tests/conftest.py make_tokenizer): byte-level BPE, 300 ids."""
    from redundancy.calibration._corpora import math_problems, stdlib_docstrings
    from redundancy.sources._tiny import _train_tokenizer

    docs = list(islice(stdlib_docstrings(), 20)) + list(islice(math_problems(), 50))
    return _train_tokenizer({"all": docs}, 300)


def _child(path: str, samples: int, seq_len: int) -> None:
    """Pack `path` in this process; print {"seconds", "grown", "fingerprint"} as JSON."""
    from redundancy.calibration import calibration_tokens

    tok = _tokenizer()
    before = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the step's own peak
    except OSError:
        pass
    t0 = time.perf_counter()
    cal = calibration_tokens(path, tok, n=samples, seq_len=seq_len)
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(seconds=seconds, grown=_status("VmHWM") - before, fingerprint=cal.fingerprint)))


def _run(path: Path, samples: int, seq_len: int) -> dict:
    """Pack `path` in a child process: its printed figures plus `peak`, its ru_maxrss in bytes
    (os.wait4: this child's own, not the maximum over earlier children)."""
    argv = [sys.executable, __file__, "--child", str(path), "--samples", str(samples),
            "--seq-len", str(seq_len)]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        proc.stdout.close()
        if proc.returncode:
            err.seek(0)
            return dict(error=f"exit {proc.returncode}: " + (err.read().strip().splitlines() or ["?"])[-1])
    return dict(json.loads(out.strip().splitlines()[-1]), peak=usage.ru_maxrss * 1024)


app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help=" ".join(__doc__.split("\n\n")[0].split()))
def main(sizes: str = typer.Option("1,10,100,1000", help="file sizes in MB (1e6 bytes), comma-separated"),
         kinds: str = typer.Option(",".join(KINDS), help="file kinds: txt, jsonl"),
         samples: int = typer.Option(32, help="windows drawn (score's default)"),
         seq_len: int = typer.Option(128, help="tokens per window (score's default)"),
         dir: Optional[Path] = typer.Option(None, "--dir", help="where the files go (default: a temp dir)"),
         child: Optional[str] = typer.Option(None, hidden=True)) -> None:
    if child:
        return _child(child, samples, seq_len)
    lines = _lines()
    print(f"{samples} x {seq_len} tokens; peak: the process's max RSS; step: what calibration_tokens added")
    print(f"  {'file':<20} {'peak MiB':>9} {'step MiB':>9} {'seconds':>8}  fingerprint")
    with tempfile.TemporaryDirectory(dir=dir) as tmp:
        for mb in (int(s) for s in sizes.split(",")):
            for kind in kinds.split(","):
                path = Path(tmp) / f"calib-{mb}mb.{kind}"
                _write(path, mb * MB, kind, list(lines))
                r = _run(path, samples, seq_len)
                path.unlink()
                if "error" in r:
                    print(f"  {path.name:<20} failed: {r['error']}")
                    continue
                print(f"  {path.name:<20} {r['peak'] / 2**20:>9.0f} {r['grown'] / 2**20:>9.0f} "
                      f"{r['seconds']:>8.2f}  {r['fingerprint']}")


if __name__ == "__main__":
    app()
