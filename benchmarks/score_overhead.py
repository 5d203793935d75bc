"""The scorer's cost over a plain forward pass and the reference procedure, same model and tokens, one run.

    python benchmarks/score_overhead.py                      # builtin:tiny final checkpoint, CPU
    python benchmarks/score_overhead.py --all-families --batch 2 --seq-len 256 --repeats 5
                                                             # Llama, NeoX (parallel), OLMo-2; small, CPU
    python benchmarks/score_overhead.py --preset llama2-7b --device cuda --dtype bfloat16 \
        --seq-len 2048 --batch 4                             # random Llama-2-7B shape, on the H100
    python benchmarks/score_overhead.py --all-families --size 7b --device cuda --dtype bfloat16 \
        --seq-len 2048 --batch 4                             # Llama-2-7B, Pythia-6.9B, OLMo-2-7B shapes

Prints tokens/s for: the full model's forward (what users run; the 1.00x baseline), the decoder
trunk alone (what the scorer runs: no LM head), the scorer (all modules, all metrics), and the
reference procedure of the study (benchmarks/_reference_scorer.py: batch size 1, one full forward
per module type, hooks copying activations to the host, fp32 cosines there); the ratios; and the
largest gap between the reference's and the scorer's per-layer importance (a correctness check).
"""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Literal, NamedTuple, Optional

import torch
import typer

import redundancy as rd
from redundancy.pipeline import DTYPES

from _reference_scorer import MODULES, reference_importance

_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32}
_SMALL = {"hidden_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 16}
PRESETS = {  # random-weight shapes; only speed (and reference agreement) is measured on them
    "llama-small": dict(model_type="llama", **_SMALL, intermediate_size=2816, num_key_value_heads=16,
                        vocab_size=32000, max_position_embeddings=4096),
    "llama2-7b": dict(model_type="llama", **_7B, intermediate_size=11008, num_key_value_heads=32,
                      vocab_size=32000, max_position_embeddings=4096),
    "neox-small": dict(model_type="gpt_neox", **_SMALL, intermediate_size=4096, vocab_size=50432,
                       use_parallel_residual=True, rotary_pct=0.25, max_position_embeddings=2048),
    "pythia-6.9b": dict(model_type="gpt_neox", **_7B, intermediate_size=16384, vocab_size=50432,
                        use_parallel_residual=True, rotary_pct=0.25, max_position_embeddings=2048),
    "olmo2-small": dict(model_type="olmo2", **_SMALL, intermediate_size=2816, num_key_value_heads=16,
                        vocab_size=100352, max_position_embeddings=4096, rms_norm_eps=1e-6),
    "olmo2-7b": dict(model_type="olmo2", **_7B, intermediate_size=11008, num_key_value_heads=32,
                     vocab_size=100352, max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=500000.0),
}
FAMILY_PRESETS = {"llama": {"small": "llama-small", "7b": "llama2-7b"},
                  "neox": {"small": "neox-small", "7b": "pythia-6.9b"},
                  "olmo2": {"small": "olmo2-small", "7b": "olmo2-7b"}}
FULL, TRUNK, SCORER, REFERENCE = ("plain forward (full model)", "plain forward (trunk, no LM head)",
                                  "scorer (3 modules x 4 metrics)", "reference (batch 1, 3 passes, host)")
CHECKED = "scorer, self-checked first batch"

# The options' choices, from the tables above (typer checks them and lists them in --help)
PresetName = Literal[("tiny", *PRESETS)]
FamilyName = Literal[tuple(FAMILY_PRESETS)]
DtypeName = Literal[tuple(DTYPES)]


class Options(NamedTuple):
    """The command line's settings, as the functions below read them."""
    preset: str
    family: Optional[str]
    all_families: bool
    size: str
    device: str
    dtype: str
    seq_len: int
    batch: int
    repeats: int
    samples_per_checkpoint: int
    reference_repeats: int


class Contender(NamedTuple):
    """One timed call: `fn` run `warmup` times untimed, then `repeats` times timed."""
    fn: Callable[[], object]
    repeats: int
    warmup: int = 2


def _presets(a: Options) -> list[str]:
    """The presets to run, in order: --all-families, else --family at --size, else --preset."""
    if a.all_families:
        return [sizes[a.size] for sizes in FAMILY_PRESETS.values()]
    return [FAMILY_PRESETS[a.family][a.size]] if a.family else [a.preset]


def _model(preset: str, device: str, dtype: str) -> torch.nn.Module:
    """builtin:tiny's final checkpoint, or a random-weight model of the preset's shape, in eval mode."""
    if preset == "tiny":
        ckpt = rd.open_series("builtin:tiny").checkpoints[-1]
        model, _ = rd.load_checkpoint(ckpt, device=device, dtype=dtype)
        return model
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = dict(PRESETS[preset])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype]).eval()


def _sync(device: str) -> Callable[[], None]:
    """What waits for the device's queued work (CUDA runs asynchronously; CPU calls return when done)."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _time_all(runs: dict[str, Contender], device: str) -> dict[str, float]:
    """Median seconds per call, the contenders interleaved (ABCDABCD...) so drift hits all alike;
    a contender with fewer repeats drops out of the later rounds."""
    sync = _sync(device)
    for c in runs.values():  # warm-up
        for _ in range(c.warmup):
            c.fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(max(c.repeats for c in runs.values())):
        for name, c in runs.items():
            if r < c.repeats:
                t0 = time.perf_counter()
                c.fn()
                sync()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _contenders(model: torch.nn.Module, ids: torch.Tensor, a: Options, last: dict) -> dict[str, Contender]:
    """The four contenders on the same model and tokens; the scores of the last calls go to `last`."""
    scorer = rd.Scorer(model)
    importance = scorer.metric_names.index("importance")

    def score() -> None:
        last[SCORER] = scorer.score_batch(ids)[..., importance].double().mean(dim=0).cpu()  # (L, 3)

    def checked() -> None:  # a checkpoint's first batch: the self-check runs on it
        scorer._to_check = True
        scorer.score_batch(ids)

    def reference() -> None:
        last[REFERENCE] = reference_importance(model, ids)  # (L, 3), host
    return {FULL: Contender(lambda: model(input_ids=ids, use_cache=False), a.repeats),
            TRUNK: Contender(lambda: model.base_model(input_ids=ids, use_cache=False), a.repeats),
            SCORER: Contender(score, a.repeats),
            CHECKED: Contender(checked, a.repeats),
            REFERENCE: Contender(reference, a.reference_repeats, warmup=1)}


def _report(preset: str, model: torch.nn.Module, secs: dict[str, float], a: Options) -> None:
    """Print tokens/s per contender, the ratios to the full forward, and the self-check's share."""
    n_tok = a.batch * a.seq_len
    base = secs[FULL]
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"{preset} ({rd.family_for(model.config).describe()}) on {a.device} ({where}), {a.dtype}, "
          f"batch {a.batch} x {a.seq_len} tokens, median of {a.repeats} (reference: {a.reference_repeats})")
    for name, s in secs.items():
        print(f"  {name:<36} {n_tok / s:>12,.0f} tokens/s   {s / base:6.2f}x full forward")
    print(f"  scorer / trunk forward: {secs[SCORER] / secs[TRUNK]:.2f}x   "
          f"scorer / full forward: {secs[SCORER] / base:.2f}x   "
          f"reference / full forward: {secs[REFERENCE] / base:.2f}x")
    print(f"  reference / scorer: {secs[REFERENCE] / secs[SCORER]:.1f}x "
          "(the scorer's speedup over the reference)")
    _report_self_check(secs, a)


def _report_self_check(secs: dict[str, float], a: Options) -> None:
    """Print the self-check's cost: its batch against a plain one, and its share of a checkpoint."""
    batches = -(-a.samples_per_checkpoint // a.batch)  # ceil: the last batch may be short
    extra = max(secs[CHECKED] - secs[SCORER], 0.0)
    print(f"  self-check: the checked batch costs {secs[CHECKED] / secs[SCORER]:.2f}x a plain one; once per "
          f"checkpoint of {a.samples_per_checkpoint} samples ({batches} batches): "
          f"{100 * extra / (batches * secs[SCORER]):.2f}% of its scoring time (target: at most 2%)")


def _check(last: dict) -> float:
    """Print the largest per-layer gap in importance between the reference and the scorer."""
    gap = (last[REFERENCE] - last[SCORER]).abs().amax(dim=0)  # per module, over layers
    ref_block = last[REFERENCE][:, 0]
    print("  check: max |reference - scorer| importance over layers: "
          + ", ".join(f"{m} {g:.2e}" for m, g in zip(MODULES, gap.tolist()))
          + f"  (block importance ranges {ref_block.min():.4f}..{ref_block.max():.4f})")
    return float(gap[0])


def bench(preset: str, a: Options) -> dict[str, float]:
    """Build the model, time the contenders, report; return the timings and the block gap."""
    torch.manual_seed(0)
    model = _model(preset, a.device, a.dtype)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq_len), device=a.device)  # (B, T)
    last: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        secs = _time_all(_contenders(model, ids, a, last), a.device)
    _report(preset, model, secs, a)
    return {**secs, "block gap": _check(last)}


def _summary(results: dict[str, dict[str, float]]) -> None:
    """One line per preset: the ratios of median times, and the reference's largest block gap."""
    print("summary (ratios of median times):")
    print(f"  {'preset':<14} {'scorer/full':>12} {'reference/full':>15} {'reference/scorer':>17} "
          f"{'block gap':>10}")
    for preset, r in results.items():
        print(f"  {preset:<14} {r[SCORER] / r[FULL]:>11.2f}x {r[REFERENCE] / r[FULL]:>14.2f}x "
              f"{r[REFERENCE] / r[SCORER]:>16.1f}x {r['block gap']:>10.1e}")


def run(a: Options) -> None:
    """Bench each preset in turn, freeing its memory before the next; a summary when several."""
    results = {}
    for preset in _presets(a):
        results[preset] = bench(preset, a)
        gc.collect()  # the model is gone with bench's frame; give its memory back before the next
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if len(results) > 1:
        _summary(results)


app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help=" ".join(__doc__.split("\n\n")[0].split()))
def main(preset: PresetName = typer.Option("tiny", help="builtin:tiny (final step) or a random shape"),
         family: Optional[FamilyName] = typer.Option(None, help="overrides --preset; see --size"),
         all_families: bool = typer.Option(False, "--all-families",
                                           help="llama, neox, olmo2 in sequence, at --size"),
         size: Literal["small", "7b"] = typer.Option("small", help="with --family/--all-families"),
         device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
         dtype: DtypeName = typer.Option("float32", help="weights and activations"),
         seq_len: int = typer.Option(128, help="tokens per sequence"),
         batch: int = typer.Option(8, help="sequences per forward pass"),
         repeats: int = typer.Option(30, help="timed calls per contender (the median is printed)"),
         samples_per_checkpoint: int = typer.Option(
             1024, help="windows scored per checkpoint (the study: 256 x 4 calibration sets)"),
         reference_repeats: int = typer.Option(3, help="the reference procedure is slow")) -> None:
    """The command line: every option into `Options`, then `run`."""
    run(Options(preset, family, all_families, size, device, dtype, seq_len, batch, repeats,
                samples_per_checkpoint, reference_repeats))


if __name__ == "__main__":
    app()
