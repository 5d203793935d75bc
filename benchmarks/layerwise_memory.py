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

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRESETS = {  # random Llama shapes: many layers, so one layer is a small part of the model
    "llama-12x512": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=12,
                         num_attention_heads=8, num_key_value_heads=8, vocab_size=32000),
    "llama-8x4096": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=8,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
}


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama-12x512", choices=list(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cap", type=float, default=0.5, help="CUDA cap, as a fraction of the weights' bytes")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "DIR", "CAP_BYTES"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _write_model(a: argparse.Namespace, folder: Path) -> int:
    """A random checkpoint of the preset in safetensors shards; returns its weights' bytes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", max_position_embeddings=max(4096, a.seq_len), **PRESETS[a.preset])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, a.dtype))
    model.save_pretrained(folder, max_shard_size="2GB")
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def _child(a: argparse.Namespace) -> None:
    """Score once in this fresh process; print seconds, peak bytes and where the scores are."""
    import torch
    from redundancy.scoring import Scorer
    from redundancy.scoring._layerwise import score_layerwise
    from transformers import AutoModelForCausalLM

    mode, folder, cap = a.child[0], Path(a.child[1]), int(a.child[2])
    dtype, cuda = getattr(torch, a.dtype), a.device.startswith("cuda")
    tokens = torch.randint(0, 32000, (a.samples, a.seq_len), generator=torch.Generator().manual_seed(0))
    if cuda and cap:
        torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.get_device_properties(a.device).total_memory)
    before, start = _reset_peak(cuda), time.perf_counter()
    try:
        if mode == "layerwise":
            scores = score_layerwise(folder, tokens, a.batch, a.device, dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(a.device).eval()
            scores = Scorer(model).score(tokens, a.batch)
    except torch.OutOfMemoryError:
        print(json.dumps(dict(oom=True)))
        return
    seconds = time.perf_counter() - start
    np.save(folder / f"{mode}-{cap}.npy", scores)
    print(json.dumps(dict(oom=False, seconds=seconds, peak=_peak(cuda) - before, scores=f"{mode}-{cap}.npy")))


def _reset_peak(cuda: bool) -> int:
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
    import torch

    return torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if key == "VmHWM" else 0


def _run(a: argparse.Namespace, mode: str, folder: Path, cap: int) -> dict:
    argv = [sys.executable, __file__, "--preset", a.preset, "--device", a.device, "--dtype", a.dtype,
            "--samples", str(a.samples), "--seq-len", str(a.seq_len), "--batch", str(a.batch),
            "--child", mode, str(folder), str(cap)]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    a = _args()
    if a.child:
        return _child(a)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = _write_model(a, folder)
        cap = int(a.cap * weights) if a.device.startswith("cuda") else 0
        print(f"{a.preset} {a.dtype} on {a.device}: weights {weights / 2**20:.1f} MiB, "
              f"{a.samples} x {a.seq_len} tokens, batch {a.batch}"
              + (f", cap {cap / 2**20:.1f} MiB" if cap else ""))
        rows = [("full", 0), *([("full", cap)] if cap else []), ("layerwise", cap)]
        results = {}
        for mode, c in rows:
            r = results[(mode, c)] = _run(a, mode, folder, c)
            where = f"under cap {c / 2**20:.0f} MiB" if c else "no cap"
            if r["oom"]:
                print(f"  {mode:9s} {where:20s} out of memory")
            else:
                print(f"  {mode:9s} {where:20s} peak {r['peak'] / 2**20:8.1f} MiB   {r['seconds']:7.2f} s")
        full, layer = results[("full", 0)], results[("layerwise", cap)]
        gap = np.abs(np.load(folder / full["scores"]) - np.load(folder / layer["scores"])).max()
        print(f"  peak ratio layerwise / full {layer['peak'] / full['peak']:.2f}; "
              f"largest score gap {gap:.2e}")


if __name__ == "__main__":
    main()
