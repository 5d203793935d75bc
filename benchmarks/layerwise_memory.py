"""Peak memory and time of layer-by-layer vs full-model scoring, same random checkpoint and tokens.

    python benchmarks/layerwise_memory.py                       # 12-layer Llama, CPU: peak RSS
    python benchmarks/layerwise_memory.py --preset llama-8x4096 --device cuda --dtype bfloat16 \
        --samples 32 --seq-len 2048 --batch 4                    # GPU capped at half the model

Each mode runs in a fresh process (load + score, wall time). CPU: peak resident set growth
(VmHWM reset before, where /proc allows; else ru_maxrss). CUDA: peak allocated bytes; the full
model also runs under `torch.cuda.set_per_process_memory_fraction` set to --cap x its weights'
bytes, where it does not fit, and layer-by-layer runs under the same cap. The largest gap between
the two modes' scores is printed as a correctness check.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, Optional, Tuple

import numpy as np
import typer

if TYPE_CHECKING:  # torch is imported where used: --help starts at once
    import torch

PRESETS = {  # random Llama shapes: many layers, so one layer is a small part of the model
    "llama-12x512": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=12,
                         num_attention_heads=8, num_key_value_heads=8, vocab_size=32000),
    "llama-8x4096": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=8,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
}
PresetName = Literal[tuple(PRESETS)]  # --preset's choices
DtypeName = Literal["float32", "bfloat16", "float16"]  # --dtype's (torch is not imported for --help)
Child = Tuple[str, Path, int]  # --child MODE DIR CAP_BYTES: score in this process ("full" or "layerwise")


class Options(NamedTuple):
    """The command line's settings, as the functions below read them."""
    preset: str
    device: str
    dtype: str
    samples: int
    seq_len: int
    batch: int
    cap: float
    child: Optional[Child] = None


def _write_model(a: Options, folder: Path) -> int:
    """A random checkpoint of the preset in safetensors shards; returns its weights' bytes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", max_position_embeddings=max(4096, a.seq_len), **PRESETS[a.preset])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, a.dtype))
    model.save_pretrained(folder, max_shard_size="2GB")
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def _child(a: Options) -> None:
    """Score once in this fresh process; print seconds, peak bytes and where the scores are."""
    import torch

    mode, folder, cap = a.child
    cuda = a.device.startswith("cuda")
    tokens = torch.randint(0, 32000, (a.samples, a.seq_len), generator=torch.Generator().manual_seed(0))
    if cuda and cap:  # the cap is in bytes; the allocator takes a fraction of the device's memory
        total = torch.cuda.get_device_properties(a.device).total_memory
        torch.cuda.set_per_process_memory_fraction(cap / total)
    score = _scoring(mode, a)  # imports first: their memory and time are not the mode's
    before, start = _reset_peak(cuda), time.perf_counter()
    try:
        scores = score(folder, tokens)  # (samples, layers, 3 modules, metrics)
    except torch.OutOfMemoryError:
        print(json.dumps(dict(oom=True)))
        return
    seconds = time.perf_counter() - start
    np.save(folder / f"{mode}-{cap}.npy", scores)
    print(json.dumps(dict(oom=False, seconds=seconds, peak=_peak(cuda) - before, scores=f"{mode}-{cap}.npy")))


def _scoring(mode: str, a: Options) -> Callable[[Path, torch.Tensor], np.ndarray]:
    """What scores the checkpoint in a folder on tokens (samples, seq_len): loaded one layer at a time
    ("layerwise"), or whole ("full"). Imports here, so the caller can leave them out of the peak."""
    import torch
    from transformers import AutoModelForCausalLM

    from redundancy.scoring import Scorer
    from redundancy.scoring._layerwise import score_layerwise

    dtype = getattr(torch, a.dtype)
    if mode == "layerwise":
        return lambda folder, tokens: score_layerwise(folder, tokens, a.batch, a.device, dtype)

    def full(folder: Path, tokens: torch.Tensor) -> np.ndarray:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(a.device).eval()
        return Scorer(model).score(tokens, a.batch)
    return full


def _reset_peak(cuda: bool) -> int:
    """Reset the peak counter; return the bytes in use now (allocated on CUDA, resident on CPU)."""
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        pass  # ru_maxrss then: an upper bound of the growth
    return _status("VmRSS")


def _peak(cuda: bool) -> int:
    """Peak bytes since `_reset_peak`: allocated on CUDA, resident (VmHWM) on CPU."""
    import torch

    return torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")


def _status(key: str) -> int:
    """A memory figure of /proc/self/status in bytes; without /proc, ru_maxrss for VmHWM (else 0)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if key == "VmHWM" else 0


def _run(a: Options, mode: str, folder: Path, cap: int) -> dict:
    """Score in a fresh process (this script with --child), so its peak is its own; its JSON line."""
    argv = [sys.executable, __file__, "--preset", a.preset, "--device", a.device, "--dtype", a.dtype,
            "--samples", str(a.samples), "--seq-len", str(a.seq_len), "--batch", str(a.batch),
            "--child", mode, str(folder), str(cap)]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_row(mode: str, cap: int, r: dict) -> None:
    """One mode's line: its peak and seconds, or that it ran out of memory."""
    where = f"under cap {cap / 2**20:.0f} MiB" if cap else "no cap"
    if r["oom"]:
        print(f"  {mode:9s} {where:20s} out of memory")
    else:
        print(f"  {mode:9s} {where:20s} peak {r['peak'] / 2**20:8.1f} MiB   {r['seconds']:7.2f} s")


def _print_gap(folder: Path, full: dict, layer: dict) -> None:
    """The peak ratio, and the largest gap between the two modes' scores (they must agree)."""
    gap = np.abs(np.load(folder / full["scores"]) - np.load(folder / layer["scores"])).max()
    print(f"  peak ratio layerwise / full {layer['peak'] / full['peak']:.2f}; "
          f"largest score gap {gap:.2e}")


def run(a: Options) -> None:
    """Write the random checkpoint, score it in each mode in a fresh process, print peaks and the gap."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = _write_model(a, folder)
        cap = int(a.cap * weights) if a.device.startswith("cuda") else 0  # bytes; no cap on CPU
        print(f"{a.preset} {a.dtype} on {a.device}: weights {weights / 2**20:.1f} MiB, "
              f"{a.samples} x {a.seq_len} tokens, batch {a.batch}"
              + (f", cap {cap / 2**20:.1f} MiB" if cap else ""))
        results = {}
        for mode, c in [("full", 0), *([("full", cap)] if cap else []), ("layerwise", cap)]:
            results[(mode, c)] = _run(a, mode, folder, c)
            _print_row(mode, c, results[(mode, c)])
        _print_gap(folder, results[("full", 0)], results[("layerwise", cap)])


app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help=" ".join(__doc__.split("\n\n")[0].split()))
def main(preset: PresetName = typer.Option("llama-12x512", help="random Llama shape: layers x hidden size"),
         device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
         dtype: DtypeName = typer.Option("float32", help="weights and activations"),
         samples: int = typer.Option(16, help="sequences scored"),
         seq_len: int = typer.Option(128, help="tokens per sequence"),
         batch: int = typer.Option(4, help="sequences per forward pass"),
         cap: float = typer.Option(0.5, help="CUDA cap, as a fraction of the weights' bytes"),
         child: Optional[Child] = typer.Option(None, hidden=True)) -> None:
    """The command line: every option into `Options`; then the benchmark, or one mode (--child)."""
    a = Options(preset, device, dtype, samples, seq_len, batch, cap, child)
    if child:
        _child(a)
    else:
        run(a)


if __name__ == "__main__":
    app()
