"""Speed and KV-cache memory of a model with k attention layers dropped, against the full model,
on the same random weights and prompt, in one run.

    python benchmarks/drop_speed.py                                   # small Llama shape, CPU
    python benchmarks/drop_speed.py --preset llama2-7b --device cuda --dtype bfloat16 \
        --prompt 2048 --new 2048 --drop 8                             # the study's setting, on a GPU
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import typer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import redundancy as rd
from redundancy.pipeline import DTYPES
from redundancy.study.speed import SpeedResult, measure_speed

PRESETS = {
    "llama-small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                      max_position_embeddings=4096),
}
PresetName = Literal[tuple(PRESETS)]  # the options' choices, from the tables
DtypeName = Literal[tuple(DTYPES)]


class Options(NamedTuple):
    """The command line's settings, as the functions below read them."""
    preset: str
    device: str
    dtype: str
    prompt: int
    new: int
    batch: int
    drop: int
    repeats: int


def _write_pair(a: Options, tmp: Path) -> dict[str, tuple[Path, bool]]:
    """A random full model under tmp/full and its Attn-k version under tmp/dropped:
    name -> (folder, whether it needs trust_remote_code)."""
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **PRESETS[a.preset])
    src = tmp / "full"
    AutoModelForCausalLM.from_config(config, dtype=DTYPES[a.dtype]).save_pretrained(src)
    # materialize copies a tokenizer beside the weights; any will do (measure_speed draws random tokens)
    AutoTokenizer.from_pretrained(rd.open_series("builtin:tiny").checkpoints[-1].path).save_pretrained(src)
    n = config.num_hidden_layers
    plan = rd.DropPlan(attn=tuple(range(n - a.drop, n)), name=f"Attn-{a.drop}")  # the deepest k
    return {"full": (src, False), plan.name: (rd.materialize(src, plan, tmp / "dropped"), True)}


def _measure(a: Options, folders: dict[str, tuple[Path, bool]]) -> dict[str, SpeedResult]:
    """Generation speed and KV cache of each model, loaded one at a time."""
    rows = {}
    for name, (path, remote) in folders.items():
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=remote, dtype=DTYPES[a.dtype])
        rows[name] = measure_speed(model.to(a.device).eval(), a.prompt, a.new, a.batch, repeats=a.repeats)
        del model  # free it before the next one loads
    return rows


def _report(a: Options, rows: dict[str, SpeedResult]) -> None:
    """Print tokens/s, speedup, KV cache (and the device's peak where measured) against the full model."""
    base = rows["full"]
    print(f"{a.preset} on {a.device}, {a.dtype}, batch {a.batch}, prompt {a.prompt} + {a.new} generated, "
          f"median of {a.repeats}")
    for name, r in rows.items():
        peak = "" if r.peak_memory_bytes is None else f"  peak {r.peak_memory_bytes / 2**30:.2f} GiB"
        print(f"  {name:<8} {r.tokens_per_s:>10,.0f} tokens/s  "
              f"speedup {r.tokens_per_s / base.tokens_per_s:.2f}x"
              f"  KV cache {r.kv_cache_bytes / 2**20:,.1f} MiB "
              f"({r.kv_cache_bytes / base.kv_cache_bytes:.2f} of full){peak}")


def run(a: Options) -> None:
    """Write the two models to a temporary folder, time them, report."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = _measure(a, _write_pair(a, Path(tmp)))
    _report(a, rows)


app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help=" ".join(__doc__.split("\n\n")[0].split()))
def main(preset: PresetName = typer.Option("llama-small", help="random Llama shape"),
         device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
         dtype: DtypeName = typer.Option("float32", help="weights and activations"),
         prompt: int = typer.Option(128, help="prompt tokens"),
         new: int = typer.Option(128, help="tokens generated"),
         batch: int = typer.Option(1, help="sequences generated at once"),
         drop: int = typer.Option(4, help="attention layers dropped (the deepest, layer 0 kept)"),
         repeats: int = typer.Option(3, help="timed generations per model (the median is printed)")) -> None:
    """The command line: every option into `Options`, then `run`."""
    run(Options(preset, device, dtype, prompt, new, batch, drop, repeats))


if __name__ == "__main__":
    app()
