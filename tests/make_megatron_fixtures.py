"""Write tests/data/megatron/ with the real Megatron library: its own model, forward pass and save.

Versions: megatron-core 0.16.1 (PyPI), torch 2.13.0 (CPU), Python 3.11; `megatron/training`,
`gpt_builders.py` and `model_provider.py` from the Megatron-LM repository at tag core_v0.16.1
(megatron-core's wheel does not ship them). Run it in a separate virtual environment, never the
project's (megatron stays out of the toolkit's dependencies):

    python3 -m venv /work/megavenv && /work/megavenv/bin/pip install torch==2.13.0 megatron-core==0.16.1
    git archive core_v0.16.1 megatron/training megatron/legacy gpt_builders.py model_provider.py \
        | tar -x -C /work/megasrc                     # in a Megatron-LM clone
    PYTHONPATH=/work/megasrc /work/megavenv/bin/python tests/make_megatron_fixtures.py

What it follows, upstream (Megatron-LM core_v0.16.1):
- megatron/training/initialize.py `initialize_megatron`: argument parsing and validation
  (megatron/training/arguments.py), global args, seeds;
- megatron/training/training.py `get_model` with model_provider.py + gpt_builders.py `gpt_builder`
  (the local spec: megatron/core/models/gpt/gpt_layer_specs.py `get_gpt_layer_local_spec`);
- megatron/training/checkpointing.py `save_checkpoint`: `--ckpt-format torch` writes
  `iter_N/mp_rank_TT[_PPP]/model_optim_rng.pt`, `--ckpt-format torch_dist` writes `iter_N/` with
  `__R_0.distcp`, `.metadata`, `metadata.json` and `common.pt` (megatron/core/dist_checkpointing).
- The logits saved beside each checkpoint (`logits_NNNNNNN.pt`: tokens and logits) are Megatron's own
  forward pass (GPTModel.forward, fp32)
  on fixed tokens, gathered across tensor-parallel ranks (vocab-parallel output) and, for pipeline
  parallel, the first stage's hidden states sent to the second (`set_input_tensor`), as Megatron's
  schedules do. No training step runs (it needs the data pipeline): before each save the weights get
  seeded noise (`_train_stand_in`), so norms are not all ones and each iteration differs.

Shims (CPU, gloo, world size 1 or 2 with torch.multiprocessing), each around a call that needs a GPU
and does nothing this script needs:
- `initialize_megatron(allow_no_cuda=True)`, after torch.distributed (gloo) and
  `parallel_state.initialize_model_parallel` are set up here: Megatron's `_initialize_distributed`
  skips both without a GPU (`device_count() == 0`);
- `_compile_dependencies` is a no-op: it compiles the dataset index helper and fused CUDA kernels;
- `torch.nn.Module.cuda` returns the module unchanged and `torch.cuda.current_device` returns "cpu":
  `get_model` moves the model to the GPU, rotary embeddings move `inv_freq` to the current device;
- `get_device_arch_version` (arguments.py, for TP > 1) answers 9 (Hopper): it only picks which
  CUDA_DEVICE_MAX_CONNECTIONS advice to print;
- the CUDA RNG tracker's `fork` is a no-op context: attention forks it around dropout (here 0), and
  its CUDA states are only seeded with a GPU (`model_parallel_cuda_manual_seed`);
- `torch.cuda.get_rng_state` returns the CPU generator's state: `save_checkpoint` stores the CUDA
  RNG state with the others (checkpointing.py `get_rng_state`);
- `torch.cuda.synchronize` is a no-op: torch_dist's writer (dist_checkpointing/strategies/
  filesystem_async.py `preload_tensors`) waits for the GPU's copies;
- `--use-cpu-initialization`: each weight is initialised whole on the CPU from the seed and split
  across ranks (megatron/core/tensor_parallel/layers.py `_initialize_affine_weight_cpu`).

Transformer Engine cannot be installed here (it builds CUDA kernels; no GPU, no CUDA toolkit), so the
TE spec cannot run. Its key layout is produced from the local spec's checkpoint by renaming, as
Megatron itself maps the two (megatron/core/models/gpt/gpt_layer_specs.py `get_gpt_layer_local_spec`:
`sharded_state_dict_keys_map` `input_layernorm.` -> `self_attention.linear_qkv.layer_norm_`,
`pre_mlp_layernorm.` -> `mlp.linear_fc1.layer_norm_`), and TE's `_extra_state` added to every TE
module (transformer_engine/pytorch/module/base.py `TransformerEngineBaseModule.get_extra_state`:
TE 1.x returns an `io.BytesIO` holding `torch.save(state)`, TE >= 2.0 a uint8 tensor, empty without
FP8). The MAP-Neo era envelope has the args as that fork named them (multimodal-art-projection/
Megatron-LM-NEO, megatron/arguments.py): `norm_epsilon` (Megatron-LM stores `layernorm_epsilon` since
commit 639c08a), no `exit_signal` nor `attention_backend` (added by Megatron Core 0.16).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "megatron"
HIDDEN, HEADS, LAYERS, FFN, VOCAB, SEQ = 128, 4, 2, 64, 127, 32  # NullTokenizer: VOCAB + 1 ids

# name -> settings; `rename`: the TE layout (none, te1 or te2); `history`: iterations saved, with the
# samples consumed by each (a batch-size ramp: not iteration x global batch)
FIXTURES = {
    "tp1_mha_torch": dict(tp=1, pp=1, groups=None, fmt="torch", rename=None, history={10: 56}),
    "tp2_gqa2_torch": dict(tp=2, pp=1, groups=2, fmt="torch", rename=None, history={10: 56}),
    "pp2_gqa2_te2_torch": dict(tp=1, pp=2, groups=2, fmt="torch", rename="te2", history={10: 56}),
    "tp2_mha_te1_mapneo": dict(tp=2, pp=1, groups=None, fmt="torch", rename="te1", history={10: 56},
                               mapneo=True),
    "tp2_gqa2_dist": dict(tp=2, pp=1, groups=2, fmt="torch_dist", rename=None, history={5: 24, 10: 56}),
}


def megatron_argv(spec: dict, save: Path) -> list[str]:
    argv = ["--num-layers", str(LAYERS), "--hidden-size", str(HIDDEN), "--num-attention-heads", str(HEADS),
            "--ffn-hidden-size", str(FFN), "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
            "--micro-batch-size", "1", "--global-batch-size", "4",
            "--tensor-model-parallel-size", str(spec["tp"]),
            "--pipeline-model-parallel-size", str(spec["pp"]),
            "--normalization", "RMSNorm", "--norm-epsilon", "1e-6", "--swiglu",
            "--position-embedding-type", "rope", "--rotary-base", "10000",
            "--disable-bias-linear", "--untie-embeddings-and-output-weights",
            "--transformer-impl", "local", "--use-cpu-initialization", "--no-gradient-accumulation-fusion",
            "--no-masked-softmax-fusion", "--no-persist-layer-norm", "--no-bias-swiglu-fusion",
            "--no-rope-fusion", "--distributed-backend", "gloo",
            "--tokenizer-type", "NullTokenizer", "--vocab-size", str(VOCAB),
            "--make-vocab-size-divisible-by", "64",
            "--lr", "3e-4", "--train-iters", "100", "--save-interval", "5", "--seed", "1234",
            "--attention-dropout", "0", "--hidden-dropout", "0", "--save", str(save),
            "--ckpt-format", spec["fmt"], "--no-save-optim", "--init-method-std", "0.05"]
    if spec["groups"]:
        argv += ["--group-query-attention", "--num-query-groups", str(spec["groups"])]
    return argv


def _shims() -> None:
    import megatron.core.tensor_parallel.random as rng
    import megatron.training.arguments as arguments
    import megatron.training.initialize as init
    import torch

    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.current_device = lambda: "cpu"
    init._compile_dependencies = lambda: None
    arguments.get_device_arch_version = lambda: 9
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    torch.cuda.synchronize = lambda *a, **k: None
    rng.CudaRNGStatesTracker.fork = lambda self, name=None: contextlib.nullcontext()


def _train_stand_in(model, iteration: int) -> None:
    """Norm weights away from their initial 1 (else swapping two norms would change nothing), and each
    iteration's weights distinct: every tensor plus 0.01 x noise seeded by (iteration, pipeline stage,
    name), the same on every tensor-parallel rank for the replicated norms, in place of training."""
    import zlib

    import torch
    from megatron.core import parallel_state as ps

    stage, tp_rank = ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm = "norm" in name
            seed = zlib.crc32(f"{iteration}/{stage}/{name}/{0 if norm else tp_rank}".encode())
            noise = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed))
            p.add_(noise * (0.2 if norm else 0.01))


def _forward(model, tokens, spec):
    """Megatron's logits (batch, seq, vocab) on `tokens`, gathered over tensor and pipeline ranks."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    b, s = tokens.shape
    position_ids = torch.arange(s).unsqueeze(0).expand(b, s)
    mask = torch.triu(torch.ones(1, 1, s, s, dtype=torch.bool), diagonal=1)  # True: masked (causal)
    stage, stages = ps.get_pipeline_model_parallel_rank(), ps.get_pipeline_model_parallel_world_size()
    with torch.no_grad():
        if stage > 0:
            hidden = torch.empty(s, b, HIDDEN)
            dist.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
            model.set_input_tensor(hidden)
        out = model(tokens, position_ids, mask)
        if stage < stages - 1:
            dist.send(out.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
            return None
        return gather_from_tensor_model_parallel_region(out).float()  # (b, s, vocab) from the shards


def worker(rank: int, world: int, name: str, spec: dict, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), CUDA_DEVICE_MAX_CONNECTIONS="1")
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    from megatron.core import parallel_state as ps

    ps.initialize_model_parallel(spec["tp"], spec["pp"])
    _shims()
    from functools import partial

    from gpt_builders import gpt_builder
    from megatron.core.enums import ModelType
    from megatron.training import get_args
    from megatron.training.checkpointing import save_checkpoint
    from megatron.training.initialize import initialize_megatron
    from megatron.training.training import get_model
    from model_provider import model_provider

    save = OUT / name
    sys.argv = ["pretrain_gpt.py", *megatron_argv(spec, save)]
    initialize_megatron(allow_no_cuda=True)
    args = get_args()
    model = get_model(partial(model_provider, gpt_builder), ModelType.encoder_or_decoder, wrap_with_ddp=False)
    for m in model:
        m.eval()
    tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    if spec.get("mapneo"):  # the fork's names: --norm-epsilon stored as norm_epsilon
        args.norm_epsilon = args.__dict__.pop("layernorm_epsilon")
        for gone in ("exit_signal", "attention_backend"):
            args.__dict__.pop(gone, None)
    for iteration, samples in spec["history"].items():
        _train_stand_in(model[0], iteration)
        logits = _forward(model[0], tokens, spec)
        args.consumed_train_samples = samples
        args.iteration = iteration
        save_checkpoint(iteration, model, None, None, 0)
        if logits is not None and ps.get_tensor_model_parallel_rank() == 0:
            torch.save({"tokens": tokens, "logits": logits.clone()}, save / f"logits_{iteration:07d}.pt")
    dist.barrier()
    dist.destroy_process_group()


def te_rename(folder: Path, kind: str) -> None:
    """The local spec's torch checkpoint -> Transformer Engine's key layout (module docstring)."""
    import torch

    def extra():
        if kind == "te2":
            return torch.empty(0, dtype=torch.uint8)  # TE >= 2.0: state serialized into a tensor
        buf = io.BytesIO()
        torch.save(None, buf)  # TE 1.x: a BytesIO of torch.save(None) without an FP8 recipe
        return buf

    for f in folder.glob("iter_*/mp_rank_*/model_optim_rng.pt"):
        ckpt = torch.load(f, weights_only=False)
        model = {}
        for key, value in ckpt["model"].items():
            key = key.replace("input_layernorm.", "self_attention.linear_qkv.layer_norm_")
            key = key.replace("pre_mlp_layernorm.", "mlp.linear_fc1.layer_norm_")
            model[key] = value
        for key in list(model):
            if key.endswith(("linear_qkv.weight", "linear_proj.weight", "linear_fc1.weight",
                             "linear_fc2.weight")):
                model[key.rsplit(".", 1)[0] + "._extra_state"] = extra()
            if key.endswith("linear_qkv.weight"):
                model[key.replace("linear_qkv.weight", "core_attention._extra_state")] = extra()
        ckpt["model"] = model
        torch.save(ckpt, f)


def main() -> None:
    import torch.multiprocessing as mp

    only = sys.argv[1:] or list(FIXTURES)
    for i, name in enumerate(only):
        spec = FIXTURES[name]
        shutil.rmtree(OUT / name, ignore_errors=True)
        world = spec["tp"] * spec["pp"]
        mp.start_processes(worker, args=(world, name, spec, 29500 + i), nprocs=world, start_method="spawn")
        if spec["rename"]:
            te_rename(OUT / name, spec["rename"])
        (OUT / name / "fixture.json").write_text(json.dumps({k: v for k, v in spec.items()}, default=str))
        print(name, sum(f.stat().st_size for f in (OUT / name).rglob("*") if f.is_file()), "bytes")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_known_args()
    main()
