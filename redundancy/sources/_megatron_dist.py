"""Megatron's `--ckpt-format torch_dist` checkpoints, read on the CPU in one process, without megatron.

An `iter_N/` folder written by megatron/core/dist_checkpointing (strategies/torch.py,
`TorchDistSaveShardedStrategy`) holds:
- `metadata.json`: {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
  "common_backend": "torch", "common_backend_version": 1} (dist_checkpointing/core.py `CheckpointingConfig`);
- `common.pt`: a `torch.save` of what every rank shares: `args`, `iteration`, `checkpoint_version`
  (3.0), `num_floating_point_operations_so_far` and `content_metadata` (how the sharded state dict was
  laid out, e.g. {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}); no weights;
- `.metadata` and `__R_K.distcp`: a PyTorch distributed checkpoint (torch.distributed.checkpoint): every
  tensor at its global shape, whatever the tensor-parallel split it was saved from, so no merge is
  needed. Megatron adds to the `.metadata` pickle `all_local_plans` (every rank's SavePlan, kept to
  reuse the plan on the next save: dist_checkpointing/strategies/state_dict_saver.py), and reads an
  optional `mcore_data`; neither is needed to read the tensors.
Megatron's keys (as written by megatron-core 0.16.1): the model's sharded state dict keys, each decoder
layer's tensors stacked along a leading layer dimension under `decoder.layers.` (TransformerBlock's
`sharded_state_dict` with `sharded_offsets`: `decoder.layers.mlp.linear_fc1.weight` is (layers,
2 x ffn, hidden), gate rows then up rows as one rank of TP1), the norms under Transformer Engine's
names also for the local spec (gpt_layer_specs.py `sharded_state_dict_keys_map`);
`*._extra_state/shard_*` and `rng_state/shard_*` are byte objects, never read here.

The `.metadata` pickle is read by PyTorch's weights-only unpickler with the DCP metadata classes
allowed (sources/_safe_pickle.py), and the tensors by torch.distributed.checkpoint's own reader, which
loads each one with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import SeriesError
from ._safe_pickle import safe_load, safe_unpickle


def _metadata_classes() -> dict[str, Any]:
    """What a DCP `.metadata` pickle names: torch.distributed.checkpoint's dataclasses and enums."""
    import torch.distributed.checkpoint.metadata as md
    import torch.distributed.checkpoint.planner as planner

    out = {}
    for module in (md, planner):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                out[f"{module.__name__}.{name}"] = obj
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    out["torch.distributed.checkpoint.filesystem._StorageInfo"] = _StorageInfo
    from torch.distributed.checkpoint._extension import ExtensionRegistry  # noqa: F401 - names only
    return out


def read_metadata(folder: Path):
    """The folder's torch.distributed.checkpoint Metadata, read without running pickled code.
    Raises SeriesError: missing, refused or unreadable."""
    path = Path(folder) / ".metadata"
    if not path.is_file():
        raise SeriesError(f"{folder} holds common.pt but no .metadata: an incomplete torch_dist checkpoint; "
                          "download the whole iter_N/ folder")
    with open(path, "rb") as f:
        return safe_unpickle(f, _metadata_classes(), path)


def _reader(folder: Path, metadata):
    from torch.distributed.checkpoint import FileSystemReader

    class _Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any):  # PyTorch's calls pickle.load
            return metadata

    return _Reader(str(folder))


def _unstack(key: str, value: torch.Tensor, layers: int) -> dict[str, torch.Tensor]:
    """`decoder.layers.X` (layers, ...) -> `decoder.layers.N.X`; fc1's (2, ffn, hidden) -> (2 ffn, hidden)."""
    rest = key[len("decoder.layers."):]
    if value.shape[0] != layers:
        raise SeriesError(f"torch_dist tensor {key} has {value.shape[0]} layers, the args say {layers}")
    out = {}
    for i in range(layers):
        t = value[i]
        if rest == "mlp.linear_fc1.weight" and t.dim() == 3:  # SwiGLU: gate then up
            t = t.reshape(-1, t.shape[-1])
        out[f"decoder.layers.{i}.{rest}"] = t
    return out


def load_dist(folder: Path) -> dict[str, Any]:
    """A torch_dist `iter_N/` folder as one rank's checkpoint: {"args", "iteration", "model"}, the model
    a flat Megatron Core state dict at global shapes (as one tensor-parallel rank of a TP1 model).
    Raises SeriesError: not torch_dist, a refused or unreadable file, shapes that do not fit the args."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    folder = Path(folder)
    meta_json = folder / "metadata.json"
    if meta_json.is_file():
        backend = json.loads(meta_json.read_text()).get("sharded_backend")
        if backend != "torch_dist":
            raise SeriesError(f"{folder} is a Megatron {backend!r} checkpoint; only torch_dist and torch "
                              "are read: convert it with Megatron's tools/checkpoint first")
    common = safe_load(folder / "common.pt")
    if "args" not in common or "iteration" not in common:
        raise SeriesError(f"{folder}/common.pt lacks args or iteration: not a Megatron checkpoint")
    metadata = read_metadata(folder)
    state = {k: torch.empty(v.size, dtype=v.properties.dtype) for k, v in metadata.state_dict_metadata.items()
             if isinstance(v, TensorStorageMetadata) and not k.startswith(("optimizer.", "rng_state"))}
    if not state:
        raise SeriesError(f"{folder} holds no model tensors (keys such as "
                          f"{sorted(metadata.state_dict_metadata)[:4]})")
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            load(state, storage_reader=_reader(folder, metadata), no_dist=True)
    except SeriesError:
        raise
    except Exception as exc:  # noqa: BLE001 - DCP wraps the reader's errors in CheckpointException
        raise SeriesError(f"{folder} is not a readable torch_dist checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); download it anew") from None
    layers = int(common["args"].num_layers)
    model: dict[str, Any] = {}
    for key, value in state.items():
        key = key[len("model."):] if key.startswith("model.") else key
        model.update(_unstack(key, value, layers) if key.startswith("decoder.layers.") else {key: value})
    return {**common, "model": model}
