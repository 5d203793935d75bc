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

import argparse
import statistics
import time

import torch

import redundancy as rd
from redundancy.pipeline import DTYPES
from redundancy.families import family_for, get_path
from redundancy.scoring._ablation import ablate
from redundancy.scoring._first_order import first_order

SMALL12 = dict(model_type="llama", hidden_size=512, intermediate_size=1408, num_hidden_layers=12,
               num_attention_heads=8, num_key_value_heads=8, vocab_size=32000, max_position_embeddings=2048)


def _model(name: str, device: str, dtype: str):
    if name == "tiny":
        model, _ = rd.load_checkpoint(rd.open_series("builtin:tiny").checkpoints[-1], device, dtype)
        return model
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = dict(SMALL12)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype]).eval()


def _median(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name: str, a: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = _model(name, a.device, a.dtype)
    fam = family_for(model.config)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq_len), device=a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    n = model.config.num_hidden_layers
    with torch.inference_mode():
        hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
    full = _median(lambda: model(input_ids=ids, use_cache=False), a.repeats, sync)
    trunk = _median(lambda: model.base_model(input_ids=ids, use_cache=False), a.repeats, sync)
    head = _median(lambda: model.get_output_embeddings()(get_path(model, fam.final_norm)(hidden)), a.repeats, sync)
    per_layer = (trunk - _median(lambda: get_path(model, fam.embed)(ids), a.repeats, sync)) / n
    ideal = full + sum(3 * ((n - l) * per_layer + head) for l in range(n))
    cached = _median(lambda: ablate(model, fam, ids), a.ablation_repeats, sync)
    naive = _median(lambda: ablate(model, fam, ids, reuse_prefix=False), a.ablation_repeats, sync)
    gap = float((ablate(model, fam, ids) - ablate(model, fam, ids, reuse_prefix=False)).abs().max())
    print(f"{name}: {n} layers, vocab {model.config.vocab_size}, {a.device} {a.dtype}, batch {a.batch} x {a.seq_len}")
    print(f"  plain forward {full * 1e3:8.1f} ms   one layer {per_layer * 1e3:6.2f} ms   head {head * 1e3:6.2f} ms")
    print(f"  naive (3L+1 forwards)  {naive:7.3f} s")
    print(f"  cached prefix          {cached:7.3f} s   {cached / naive:.2f}x naive")
    print(f"  ideal of that schedule {ideal:7.3f} s   cached / ideal {cached / ideal:.2f}x (target <= 1.1), "
          f"ideal / naive {ideal / naive:.2f}x")
    print(f"  max |cached - naive| over loss_delta and kl: {gap:.1e}")
    grad = _median(lambda: first_order(model, fam, ids), a.repeats, sync)
    est, exact = first_order(model, fam, ids).mean(0), ablate(model, fam, ids)[..., 0].mean(0)  # (L, 3)
    rho = [_spearman(est[1:, k], exact[1:, k]) for k in range(3)]
    print(f"  first-order estimate {grad * 1e3:8.1f} ms = {grad / full:.2f}x a plain forward; Spearman with "
          f"loss_delta over layers 1+: block {rho[0]:.2f}, attn {rho[1]:.2f}, mlp {rho[2]:.2f}")


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = (t.argsort().argsort().double() for t in (x, y))
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "llama-small-12"], action="append")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--ablation-repeats", type=int, default=3)
    a = ap.parse_args()
    for name in a.model or ["tiny", "llama-small-12"]:
        bench(name, a)


if __name__ == "__main__":
    main()
