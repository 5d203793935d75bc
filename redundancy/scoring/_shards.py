"""A checkpoint read one module at a time: a weightless skeleton, and safetensors reads by prefix."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..errors import SeriesError


class Shards:
    """The safetensors files of one checkpoint folder: which file holds each tensor, and its config."""

    def __init__(self, folder: str | Path) -> None:
        from transformers import AutoConfig

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise SeriesError(f"{self.folder} has no config.json: pass a Hugging Face checkpoint folder")
        self.config = AutoConfig.from_pretrained(self.folder)
        self.files = self._weight_map()

    def _weight_map(self) -> dict[str, Path]:
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():  # sharded: the index names each tensor's file
            weight_map = json.loads(index.read_text())["weight_map"]
            return {key: self.folder / name for key, name in weight_map.items()}
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise SeriesError(
                f"{self.folder} has no .safetensors weights: layer-by-layer scoring reads one layer at a "
                "time from safetensors files. Re-save the checkpoint with save_pretrained(..., "
                "safe_serialization=True), or score it in full mode.")
        out = {}
        for file in files:
            with safe_open(file, framework="pt") as handle:  # reads the header only
                out.update(dict.fromkeys(handle.keys(), file))
        return out

    def prefix(self, module_path: str, base_model_prefix: str) -> str:
        """The key prefix of `module_path`'s tensors: as in the model, or saved from its base model."""
        short = module_path.removeprefix(base_model_prefix + ".")
        for candidate in (module_path + ".", short + "."):
            if any(key.startswith(candidate) for key in self.files):
                return candidate
        raise SeriesError(f"{self.folder} holds no tensor under {module_path!r} (nor {short!r}): "
                          "the checkpoint does not match its config.json's model_type")

    def read(self, prefix: str, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, host tensor) for `prefix + name`, opening only the files that hold them.

        Each file is closed after its tensors are read, so its mapped pages leave the resident set.
        """
        missing = [prefix + n for n in names if prefix + n not in self.files]
        if missing:
            raise SeriesError(f"{self.folder} lacks {len(missing)} tensors the model needs, e.g. "
                              f"{missing[0]!r}: the checkpoint is incomplete or of another architecture")
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.files[prefix + name], []).append(name)
        for file, group in by_file.items():
            with safe_open(file, framework="pt", device="cpu") as handle:
                for name in group:
                    yield name, handle.get_tensor(prefix + name)


def skeleton(config, dtype: torch.dtype) -> nn.Module:
    """The causal LM of `config` with every tensor on the meta device: structure, no memory.

    Built as from_pretrained builds it (same class, attention implementation and default dtype),
    so materialized modules compute what the full model computes.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


def materialize(model: nn.Module, module: nn.Module, shards: Shards, path: str,
                device: torch.device) -> None:
    """Give the meta `module` (at attribute `path` of `model`) its checkpoint tensors on `device`.

    Each tensor takes the dtype of the skeleton's tensor. Non-persistent buffers (rotary inv_freq,
    Gemma-2's embedding scale) are in no checkpoint: the model's `_init_weights` computes them, as
    from_pretrained does; loaded tensors are flagged so that it leaves them alone.
    """
    wanted = module.state_dict()  # persistent entries only, meta tensors: names and dtypes
    if wanted:
        prefix = shards.prefix(path, model.base_model_prefix)
        state = {name: t.to(device=device, dtype=wanted[name].dtype)  # one host tensor at a time
                 for name, t in shards.read(prefix, list(wanted))}
        module.load_state_dict(state, assign=True)
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor._is_hf_initialized = True
    for sub in module.modules():
        meta = [name for name, b in sub._buffers.items() if b is not None and b.is_meta]
        for name in meta:
            sub._buffers[name] = torch.empty_like(sub._buffers[name], device=device)
        if meta:
            model._init_weights(sub)


def release(module: nn.Module) -> None:
    """Free a materialized module's memory: its tensors go back to the meta device."""
    module.to("meta")
