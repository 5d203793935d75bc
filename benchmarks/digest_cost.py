"""What hashing every byte of a checkpoint's weight files costs (sources/_digest.py), against scoring.

    python benchmarks/digest_cost.py                         # 64 MiB, 256 MiB, 1 GiB files in a temp dir
    python benchmarks/digest_cost.py --dir /data/scratch --sizes 1024,4096   # on the disk the weights use

For each file size: read-only, xxh3-128 (what local_digest uses), blake2b and sha256 throughput in
GB/s, the file read cold (its pages evicted with posix_fadvise; this evicts only the file written
here) and warm (from the page cache); then the cost of a cached digest (a stat and a JSON read).
Then the projected cost for a 14 GB (7B, bf16) checkpoint against a scoring-time estimate: a random
Llama's plain forward pass is timed on this machine and scaled by parameter count (all but the
input embedding) to 7B for the given tokens per checkpoint (default: `redundancy score`'s 3 sets
x 32 x 128 tokens). That CPU estimate is a projection, not a measurement; a GPU scores far faster,
so the GPU line gives the scoring time above which the hash stays under the 5% bar, not a GPU
measurement.
"""
from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import typer

from redundancy import _digest
from redundancy.sources._checkpoint import local_digest

MIB = 1 << 20
CKPT_BYTES = 14e9  # a 7B model in bf16 (Llama-2-7B: 6.74e9 parameters x 2 bytes = 13.5 GB)
P_7B = 6.74e9 - 32000 * 4096  # Llama-2-7B's parameters but its input embedding (a lookup, no compute)


def _write(path: Path, size: int) -> None:
    """`size` bytes of random data (a 64 MiB random block repeated: hash speed does not depend on
    the content, and os.urandom of 1 GiB would dominate the run), flushed to the disk."""
    block = os.urandom(min(size, 64 * MIB))
    with open(path, "wb") as fh:
        for start in range(0, size, len(block)):
            fh.write(block[:size - start])
        fh.flush()
        os.fsync(fh.fileno())


def _evict(path: Path) -> None:
    """Drop `path`'s pages from the page cache (this file only), so the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _reader(make: Callable[[], object] | None) -> Callable[[Path], None]:
    """Read a file in CHUNK pieces, feeding a hash made by `make` (None: read only)."""
    def read(path: Path) -> None:
        h, buf = (make() if make else None), bytearray(_digest.CHUNK)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                if h is not None:
                    h.update(view[:n])
    return read


def _gbps(fn: Callable[[Path], None], path: Path, repeats: int, cold: bool) -> float:
    """Median GB/s (1e9 bytes/s) of `fn(path)` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        if cold:
            _evict(path)
        else:
            fn(path)  # warm the page cache first
        t0 = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t0)
    return path.stat().st_size / statistics.median(times) / 1e9


def _hashers() -> dict[str, Callable[[Path], None]]:
    return {"read only": _reader(None), "xxh3-128": lambda p: _digest.hash_file(p),
            "blake2b": _reader(hashlib.blake2b), "sha256": _reader(hashlib.sha256)}


def _forward_seconds_per_token_param(tokens: int, seq_len: int) -> tuple[float, int, float]:
    """(seconds per token per parameter, parameters, tokens/s) of a plain fp32 forward pass of a
    random Llama (hidden 512, 8 layers) on this machine's CPU; parameters counts all but the input
    embedding, which a token passes through as a lookup."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                                  num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                                  max_position_embeddings=max(seq_len, 128))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    ids = torch.randint(0, 32000, (max(tokens // seq_len, 1), seq_len))
    with torch.inference_mode():
        model(ids[:1])  # warm-up
        t0 = time.perf_counter()
        model(ids)
        s = time.perf_counter() - t0
    return s / ids.numel() / params, params, ids.numel() / s


def _cached_digest_ms(path: Path) -> float:
    """Milliseconds for local_digest of a folder holding `path` once its digest is cached."""
    folder = path.parent / "ckpt"
    folder.mkdir(exist_ok=True)
    link = folder / "model.safetensors"
    if not link.exists():
        os.link(path, link)
    old = _digest.RACY_NS
    _digest.RACY_NS = 0  # the file was written seconds ago; let it be cached now
    try:
        local_digest(folder)
        t0 = time.perf_counter()
        local_digest(folder)
        return (time.perf_counter() - t0) * 1e3
    finally:
        _digest.RACY_NS = old


app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help=" ".join(__doc__.split("\n\n")[0].split()))
def main(sizes: str = typer.Option("64,256,1024", help="file sizes in MiB, comma-separated"),
         dir: Optional[Path] = typer.Option(None, "--dir", help="where to write them (default: a temp dir)"),
         repeats: int = typer.Option(3, help="timed reads per hasher and size (the median is printed)"),
         tokens: int = typer.Option(3 * 32 * 128, help="tokens scored per checkpoint (score's default)"),
         seq_len: int = typer.Option(128, help="tokens per window")) -> None:
    with tempfile.TemporaryDirectory(dir=dir) as tmp:
        os.environ["REDUNDANCY_CACHE"] = str(Path(tmp) / "cache")  # never the user's digest cache
        print(f"files in {tmp}; GB/s = 1e9 bytes/s, median of {repeats}")
        print(f"  {'size':>9} {'hasher':<10} {'cold GB/s':>10} {'warm GB/s':>10}")
        warm_xxh, path = [], None
        for mib in (int(s) for s in sizes.split(",")):
            path = Path(tmp) / f"w-{mib}.bin"
            _write(path, mib * MIB)
            for name, fn in _hashers().items():
                cold, warm = _gbps(fn, path, repeats, True), _gbps(fn, path, repeats, False)
                print(f"  {mib:>5} MiB {name:<10} {cold:>10.2f} {warm:>10.2f}")
                if name == "xxh3-128":
                    warm_xxh.append((cold, warm))
            if mib != max(int(s) for s in sizes.split(",")):
                path.unlink()
        print(f"cached digest (stat + JSON read, no file read): {_cached_digest_ms(path):.2f} ms")
        _projection(*warm_xxh[-1], tokens, seq_len)


def _projection(cold: float, warm: float, tokens: int, seq_len: int) -> None:
    """The 14 GB checkpoint's hash time against the projected scoring time (see the docstring)."""
    per, params, tps = _forward_seconds_per_token_param(tokens, seq_len)
    score_s = per * P_7B * tokens
    hot, disk = CKPT_BYTES / warm / 1e9, CKPT_BYTES / cold / 1e9
    print(f"14 GB checkpoint, xxh3-128 at the largest file's rates: {hot:.1f} s from the page cache, "
          f"{disk:.1f} s from this disk (once per file version; cached after)")
    print(f"CPU scoring estimate: a {params / 1e6:.0f}M-parameter Llama forward runs {tps:,.0f} tokens/s "
          f"here (fp32); scaled to 7B's {P_7B / 1e9:.2f}B, {tokens:,} tokens take {score_s:,.0f} s (a "
          "projection of a plain forward; the scorer's ratio to it: benchmarks/score_overhead.py)")
    print(f"  hash / CPU scoring: {hot / score_s:.2%} (page cache), {disk / score_s:.2%} (disk)")
    print(f"GPU: not measured here; the hash stays under 5% of any scoring run longer than "
          f"{20 * hot:.0f} s (page cache) or {20 * disk:.0f} s (this disk); loading the checkpoint reads "
          "the same 14 GB once more, so from disk the digest costs about what the load does")


if __name__ == "__main__":
    app()
