"""The scorer's cost over a plain forward pass, on the same model and tokens, in one run.

    python benchmarks/score_overhead.py                      # builtin:tiny final checkpoint, CPU
    python benchmarks/score_overhead.py --preset llama2-7b --device cuda --dtype bfloat16 \
        --seq-len 2048 --batch 4                             # random Llama-2-7B shape, on a GPU

Prints tokens/s for: the full model's forward (what users run), the decoder trunk alone (what
the scorer runs: no LM head), and the scorer (all modules, all metrics); and the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import redundancy as rd
from redundancy._pipeline import DTYPES

PRESETS = {  # random-weight shapes; only speed is measured on them
    "llama-small": dict(model_type="llama", hidden_size=1024, intermediate_size=2816,
                        num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16,
                        vocab_size=32000, max_position_embeddings=4096),
    "llama2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      vocab_size=32000, max_position_embeddings=4096),
}


def _model(preset: str, device: str, dtype: str):
    if preset == "tiny":
        ckpt = rd.open_series("builtin:tiny").checkpoints[-1]
        model, _ = rd.load_checkpoint(ckpt, device, dtype)
        return model
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = dict(PRESETS[preset])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype]).eval()


def _time_all(fns: dict, device: str, repeats: int) -> dict[str, float]:
    """Median seconds per call, the contenders interleaved (ABCABC...) so drift hits all alike."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for fn in fns.values():  # warm-up
        fn(), fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", *PRESETS])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = _model(a.preset, a.device, a.dtype)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq_len), device=a.device)
    scorer = rd.Scorer(model)
    with torch.inference_mode():
        runs = {
            "plain forward (full model)": lambda: model(input_ids=ids, use_cache=False),
            "plain forward (trunk, no LM head)": lambda: model.base_model(input_ids=ids, use_cache=False),
            "scorer (3 modules x 4 metrics)": lambda: scorer.score_batch(ids),
        }
        secs = _time_all(runs, a.device, a.repeats)
    n_tok = a.batch * a.seq_len
    base = secs["plain forward (full model)"]
    print(f"{a.preset} on {a.device} ({torch.cuda.get_device_name() if a.device.startswith('cuda') else 'cpu'}), "
          f"{a.dtype}, batch {a.batch} x {a.seq_len} tokens, median of {a.repeats}")
    for name, s in secs.items():
        print(f"  {name:<36} {n_tok / s:>12,.0f} tokens/s   {s / base:5.2f}x full forward")
    trunk = secs["plain forward (trunk, no LM head)"]
    print(f"  scorer / trunk forward: {secs['scorer (3 modules x 4 metrics)'] / trunk:.2f}x")


if __name__ == "__main__":
    main()
