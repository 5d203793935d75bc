"""Exact ablation's cost: the cached-prefix schedule against the naive one and against its ideal.

    python benchmarks/ablation_cost.py                    # builtin:tiny final checkpoint and a 12-layer
                                                          # llama-small shape (32k vocabulary), CPU
    python benchmarks/ablation_cost.py --device cuda --dtype bfloat16 --batch 4 --seq-len 2048

Naive: 3L + 1 full forwards per batch (one per module dropped, one clean). Cached prefix
(scoring/_ablation.py): an ablation at layer l replays layers 0..l-1 from the clean pass and re-runs
layers l..L-1 and the head. Its ideal is the clean pass plus, per ablation, the layers re-run and
one head, priced with this model's own per-layer and head times. Printed: seconds per batch, the
ratios cached / ideal (target at most 1.1) and cached / naive, and the largest gap between the two
schedules' loss_delta (they must agree). Then the first-order estimate (loss_delta_grad: one
forward and one backward): its cost against a plain forward, and its Spearman rank correlation with
the exact loss_delta across layers 1+ per module (how well it ranks what it estimates).
"""
from __future__ import annotations

import enum
import statistics
import time
from collections.abc import Callable
from typing import List, Literal, NamedTuple, Optional

import torch
import typer

import redundancy as rd
from redundancy.families import Family, family_for, get_path
from redundancy.pipeline import DTYPES
from redundancy.scoring._ablation import ablate
from redundancy.scoring._first_order import first_order

SMALL12 = dict(model_type="llama", hidden_size=512, intermediate_size=1408, num_hidden_layers=12,
               num_attention_heads=8, num_key_value_heads=8, vocab_size=32000, max_position_embeddings=2048)
MODELS = ("tiny", "llama-small-12")  # builtin:tiny's final checkpoint; SMALL12 with random weights
ModelName = enum.Enum("ModelName", {m: m for m in MODELS}, type=str)  # --model's choices (repeatable)
DtypeName = Literal[tuple(DTYPES)]


class Options(NamedTuple):
    """The command line's settings, as the functions below read them."""
    models: tuple[str, ...]
    device: str
    dtype: str
    batch: int
    seq_len: int
    repeats: int
    ablation_repeats: int


class Costs(NamedTuple):
    """Median seconds per batch of the forward, its parts and the two ablation schedules; and the
    largest |cached - naive| over loss_delta and kl (the schedules must agree)."""
    full: float
    per_layer: float
    head: float
    cached: float
    naive: float
    gap: float

    def ideal(self, n: int) -> float:
        """The cached schedule's floor: the clean pass, then per ablation at layer l (3 modules each)
        the layers l..L-1 re-run and one head."""
        return self.full + sum(3 * ((n - layer) * self.per_layer + self.head) for layer in range(n))


def _model(name: str, device: str, dtype: str) -> torch.nn.Module:
    """builtin:tiny's final checkpoint, or SMALL12 with random weights, in eval mode."""
    if name == "tiny":
        final = rd.open_series("builtin:tiny").checkpoints[-1]
        model, _ = rd.load_checkpoint(final, device=device, dtype=dtype)
        return model
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = dict(SMALL12)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype]).eval()


def _median(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of `repeats` calls of fn, after one untimed warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _costs(model: torch.nn.Module, fam: Family, ids: torch.Tensor, a: Options,
           sync: Callable[[], None]) -> Costs:
    """Time the forward and its parts (one layer: the trunk less the embedding, over L), then both
    ablation schedules on ids (B, T), and compare the schedules' results."""
    with torch.inference_mode():
        hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state  # (B, T, d)
    full = _median(lambda: model(input_ids=ids, use_cache=False), a.repeats, sync)
    trunk = _median(lambda: model.base_model(input_ids=ids, use_cache=False), a.repeats, sync)
    head = _median(lambda: model.get_output_embeddings()(get_path(model, fam.final_norm)(hidden)),
                   a.repeats, sync)
    embed = _median(lambda: get_path(model, fam.embed)(ids), a.repeats, sync)
    per_layer = (trunk - embed) / model.config.num_hidden_layers
    cached = _median(lambda: ablate(model, fam, ids), a.ablation_repeats, sync)
    naive = _median(lambda: ablate(model, fam, ids, reuse_prefix=False), a.ablation_repeats, sync)
    gap = float((ablate(model, fam, ids) - ablate(model, fam, ids, reuse_prefix=False)).abs().max())
    return Costs(full, per_layer, head, cached, naive, gap)


def _report(name: str, model: torch.nn.Module, a: Options, c: Costs) -> None:
    """Print the forward's parts, both schedules, the cached one against its ideal, and their gap."""
    n = model.config.num_hidden_layers
    ideal = c.ideal(n)
    print(f"{name}: {n} layers, vocab {model.config.vocab_size}, {a.device} {a.dtype}, "
          f"batch {a.batch} x {a.seq_len}")
    print(f"  plain forward {c.full * 1e3:8.1f} ms   one layer {c.per_layer * 1e3:6.2f} ms   "
          f"head {c.head * 1e3:6.2f} ms")
    print(f"  naive (3L+1 forwards)  {c.naive:7.3f} s")
    print(f"  cached prefix          {c.cached:7.3f} s   {c.cached / c.naive:.2f}x naive")
    print(f"  ideal of that schedule {ideal:7.3f} s   cached / ideal {c.cached / ideal:.2f}x "
          f"(target <= 1.1), ideal / naive {ideal / c.naive:.2f}x")
    print(f"  max |cached - naive| over loss_delta and kl: {c.gap:.1e}")


def _first_order_report(model: torch.nn.Module, fam: Family, ids: torch.Tensor, full: float, a: Options,
                        sync: Callable[[], None]) -> None:
    """Time the first-order estimate against a plain forward (`full` seconds), and print how well
    it ranks layers 1+ against the exact loss_delta, per module."""
    grad = _median(lambda: first_order(model, fam, ids), a.repeats, sync)
    est, exact = first_order(model, fam, ids).mean(0), ablate(model, fam, ids)[..., 0].mean(0)  # (L, 3)
    rho = [_spearman(est[1:, k], exact[1:, k]) for k in range(3)]
    print(f"  first-order estimate {grad * 1e3:8.1f} ms = {grad / full:.2f}x a plain forward; Spearman with "
          f"loss_delta over layers 1+: block {rho[0]:.2f}, attn {rho[1]:.2f}, mlp {rho[2]:.2f}")


def bench(name: str, a: Options) -> None:
    """Build the model, time the forward, both ablation schedules and the first-order estimate; print."""
    torch.manual_seed(0)
    model = _model(name, a.device, a.dtype)
    fam = family_for(model.config)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq_len), device=a.device)  # (B, T)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)  # CUDA is async
    costs = _costs(model, fam, ids, a, sync)
    _report(name, model, a, costs)
    _first_order_report(model, fam, ids, costs.full, a, sync)


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (ties ranked in order)."""
    rx, ry = (t.argsort().argsort().double() for t in (x, y))
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help=" ".join(__doc__.split("\n\n")[0].split()))
def main(model: Optional[List[ModelName]] = typer.Option(None, help="repeat for several; default: all"),
         device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
         dtype: DtypeName = typer.Option("float32", help="weights and activations"),
         batch: int = typer.Option(4, help="sequences per forward pass"),
         seq_len: int = typer.Option(128, help="tokens per sequence"),
         repeats: int = typer.Option(10, help="timed calls of each forward and of the first-order estimate"),
         ablation_repeats: int = typer.Option(3, help="timed calls of each ablation schedule")) -> None:
    """The command line: every option into `Options`, then `bench` per model."""
    a = Options(tuple(m.value for m in model or []) or MODELS, device, dtype, batch, seq_len, repeats,
                ablation_repeats)
    for name in a.models:
        bench(name, a)


if __name__ == "__main__":
    app()
