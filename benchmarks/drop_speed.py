"""Speed and KV-cache memory of a model with k attention layers dropped, against the full model,
on the same random weights and prompt, in one run.

    python benchmarks/drop_speed.py                                   # small Llama shape, CPU
    python benchmarks/drop_speed.py --preset llama2-7b --device cuda --dtype bfloat16 \
        --prompt 2048 --new 2048 --drop 8                             # the study's setting, on a GPU
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import redundancy as rd
from redundancy.pipeline import DTYPES
from redundancy.study.speed import measure_speed

PRESETS = {
    "llama-small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama-small", choices=list(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--drop", type=int, default=4, help="attention layers dropped (the deepest, layer 0 kept)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **PRESETS[a.preset])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "full"
        AutoModelForCausalLM.from_config(config, dtype=DTYPES[a.dtype]).save_pretrained(src)
        AutoTokenizer.from_pretrained(rd.open_series("builtin:tiny").checkpoints[-1].path).save_pretrained(src)
        n = config.num_hidden_layers
        plan = rd.DropPlan(attn=tuple(range(n - a.drop, n)), name=f"Attn-{a.drop}")
        dropped = rd.materialize(src, plan, Path(tmp) / "dropped")
        rows = {}
        for name, path, remote in (("full", src, False), (plan.name, dropped, True)):
            model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=remote, dtype=DTYPES[a.dtype])
            rows[name] = measure_speed(model.to(a.device).eval(), a.prompt, a.new, a.batch, repeats=a.repeats)
            del model
    base = rows["full"]
    print(f"{a.preset} on {a.device}, {a.dtype}, batch {a.batch}, prompt {a.prompt} + {a.new} generated, "
          f"median of {a.repeats}")
    for name, r in rows.items():
        peak = "" if r.peak_memory_bytes is None else f"  peak {r.peak_memory_bytes / 2**30:.2f} GiB"
        print(f"  {name:<8} {r.tokens_per_s:>10,.0f} tokens/s  speedup {r.tokens_per_s / base.tokens_per_s:.2f}x"
              f"  KV cache {r.kv_cache_bytes / 2**20:,.1f} MiB ({r.kv_cache_bytes / base.kv_cache_bytes:.2f} of full){peak}")


if __name__ == "__main__":
    main()
