"""Write a dropped model as a Hugging Face checkpoint that loads anywhere."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from .._atomic import atomic_dir, check_output, is_incomplete
from ..errors import RedundancyError
from ..families import Family, family_for
from . import modeling_dropped
from ._plan import DropPlan

AUTO_MAP = {"AutoModelForCausalLM": "modeling_dropped.DroppedForCausalLM"}


def drop_sites(family: Family) -> dict[str, str | None]:
    return dict(layers=family.layers, attn=family.attn, mlp=family.mlp, attn_norm=family.attn_norm,
                mlp_norm=family.mlp_norm, attn_out=family.attn_out, mlp_out=family.mlp_out,
                residual_inside=family.residual_inside)


def materialize(src: str | Path, plan: DropPlan, out: str | Path, overwrite: bool = False) -> Path:
    """Save `src` without the plan's modules. Pure block drops: a stock model with fewer layers.

    `out` is written under a temporary name and renamed when complete; it may not be, contain or
    sit inside `src`, and an existing non-empty `out` is replaced only with `overwrite`.
    """
    from transformers import AutoTokenizer

    from ..sources._load import load_model

    out = check_output(out, [src], overwrite)
    model = load_model(src, dtype="auto")
    family = family_for(model.config)
    layers = model.get_submodule(family.layers)
    plan.check(len(layers))
    if plan.blocks_only:
        _remove_layers(model, family, plan.attn)
    else:
        _check_cache_anchor(model.config, plan, len(layers))
        model.config.drop_attn_list, model.config.drop_mlp_list = list(plan.attn), list(plan.mlp)
        model.config.drop_sites, model.config.auto_map = drop_sites(family), AUTO_MAP
        modeling_dropped.apply_drops(model, model.config)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
        if not plan.blocks_only:
            shutil.copy(modeling_dropped.__file__, tmp / "modeling_dropped.py")
    return out


def _remove_layers(model: nn.Module, family: Family, drop: tuple[int, ...]) -> None:
    layers = model.get_submodule(family.layers)
    keep = [i for i in range(len(layers)) if i not in drop]
    parent, name = family.layers.rsplit(".", 1)
    setattr(model.get_submodule(parent), name, nn.ModuleList([layers[i] for i in keep]))
    for new, layer in enumerate(model.get_submodule(family.layers)):
        for m in layer.modules():  # the KV cache slot of each attention follows its new position
            if hasattr(m, "layer_idx"):
                m.layer_idx = new
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]


def _check_cache_anchor(config, plan: DropPlan, n: int) -> None:
    """The cache reads sequence lengths from the first layer of each attention type."""
    types = getattr(config, "layer_types", None) or ["full_attention"] * n
    anchors = {t: types.index(t) for t in set(types)}
    hit = sorted(i for i in anchors.values() if i in plan.attn)
    if hit:
        raise RedundancyError(f"cannot drop the attention of layer {hit[0]}: the KV cache reads the sequence "
                              "length there (first layer of its attention type); drop its block instead")


def load_dropped(path: str | Path, **kwargs) -> nn.Module:
    """Load a checkpoint in the study's released format (drop lists in config.json, weights maybe
    still present, its own auto_map) with our one generic modeling code, no remote code run."""
    from transformers import AutoConfig

    raw = json.loads((Path(path) / "config.json").read_text())
    raw.pop("auto_map", None)
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    config.drop_sites = drop_sites(family_for(config))
    return modeling_dropped.load_stock(path, config, **kwargs)


def load_any(path: str | Path, **kwargs) -> nn.Module:
    """Any checkpoint folder: dropped (ours or the study's format), quantized or stock; eval mode."""
    config = Path(path) / "config.json"
    if is_incomplete(path):
        raise RedundancyError(f"{path} is a half-written output (its writer was killed or is still running); "
                              "run the command that writes it again")
    if not config.exists():
        raise RedundancyError(f"{path} is not a checkpoint folder (no config.json)")
    raw = json.loads(config.read_text())
    if raw.get("drop_attn_list") or raw.get("drop_mlp_list"):
        return load_dropped(path, **kwargs).eval()
    from ..sources._load import load_model
    return load_model(path, **kwargs)
