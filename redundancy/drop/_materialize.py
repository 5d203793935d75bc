"""Write a dropped model as a Hugging Face checkpoint that never loads as another model.

Two formats, chosen by the plan and the config:

- Pure block drops: the stock architecture with fewer layers, every per-layer config field remapped
  (`_layer_config`); plain `from_pretrained`, lm-eval and serving engines load it as is.
- Anything else (attention or MLP drops, joint plans, block drops a stock config cannot express):
  config.json says `"model_type": "redundancy_dropped"` with the family's own type in
  `stock_model_type`, the drop lists (`drop_attn_list`, `drop_mlp_list`, the study's keys),
  `drop_sites`, and an `auto_map` to the one generic `modeling_dropped.py` saved beside it. A
  loader without `trust_remote_code=True` (plain `from_pretrained`, lm-eval's `--model hf` with its
  defaults, a serving engine) stops with transformers' "contains custom code ... pass
  trust_remote_code=True" instead of building the stock family with the dropped modules at random.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from .._atomic import atomic_dir, check_output, is_incomplete
from ..errors import DropError, RedundancyError
from ..families import Family, family_for
from . import modeling_dropped
from ._layer_config import check_layer_fields, index_bound, remap_for_blocks
from ._plan import DropPlan

MODEL_TYPE = modeling_dropped.DroppedConfig.model_type  # "redundancy_dropped"
BLOCK_MARK = "redundancy_block_drop"  # config.json key of a block drop saved as a stock model
AUTO_MAP = {"AutoConfig": "modeling_dropped.DroppedConfig",
            "AutoModelForCausalLM": "modeling_dropped.DroppedForCausalLM"}
README = """# A dropped checkpoint written by `redundancy`

Dropped modules: attention of layers {attn}, MLP of layers {mlp} (their weights are absent).
It loads only with its own modeling file, which builds the stock `{stock}` model without them:

    AutoModelForCausalLM.from_pretrained(PATH, trust_remote_code=True)
    lm_eval --model hf --model_args pretrained=PATH,trust_remote_code=True ...
    redundancy.load_any(PATH)
"""


def drop_sites(family: Family) -> dict[str, str | None]:
    return dict(layers=family.layers, attn=family.attn, mlp=family.mlp, attn_norm=family.attn_norm,
                mlp_norm=family.mlp_norm, attn_out=family.attn_out, mlp_out=family.mlp_out,
                residual_inside=family.residual_inside)


def saved_as_stock(plan: DropPlan, config: dict[str, Any]) -> bool:
    """True when `plan` on a model of `config` (a config.json dict) is saved as a shallower stock
    model: a pure block plan and no field whose effect follows a layer's index."""
    return plan.blocks_only and not index_bound(config)


def checkpoint_config(path: str | Path):
    """The family's own config of any checkpoint folder: stock, dropped (ours: `stock_model_type`;
    the study's released format), quantized; drop lists kept as attributes. No folder code runs.

    Raises:
        OSError, ValueError: from transformers, on a missing or malformed config.json.
    """
    from transformers import AutoConfig

    raw = json.loads((Path(path) / "config.json").read_text())
    if raw.get("model_type") == MODEL_TYPE or raw.get("drop_attn_list") or raw.get("drop_mlp_list"):
        return modeling_dropped.stock_config(raw)
    return AutoConfig.from_pretrained(path)


def check_plan(src: str | Path, plan: DropPlan) -> None:
    """Everything `materialize(src, plan, ...)` needs, checked from config.json alone (no weights).

    Raises:
        DropError: a layer out of range, a KV-cache anchor dropped, a per-layer config field with no
            remap rule (named).
        UnsupportedFamilyError: the model_type is not in the family table.
    """
    config = checkpoint_config(src)
    family_for(config)
    raw = config.to_dict()
    n = config.num_hidden_layers
    plan.check(n)
    if saved_as_stock(plan, raw):
        check_layer_fields(raw)
    else:
        _check_cache_anchor(config, plan, n, blocks=plan.blocks_only)


def materialize(src: str | Path, plan: DropPlan, out: str | Path, overwrite: bool = False) -> Path:
    """Save `src` without the plan's modules (module docstring: which format, and why).

    `out` is written under a temporary name and renamed when complete; it may not be, contain or
    sit inside `src`, and an existing non-empty `out` is replaced only with `overwrite`.

    Raises:
        DropError, UnsupportedFamilyError: from `check_plan`, before any weight is read.
        OutputError: `out` is `src`, inside it, or exists without `overwrite`.
    """
    from .._load import load_model, load_tokenizer

    out = check_output(out, [src], overwrite, kind="dropped")
    check_plan(src, plan)
    model = load_model(src, dtype="auto")
    family = family_for(model.config)
    n = len(model.get_submodule(family.layers))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if saved_as_stock(plan, model.config.to_dict()):
            keep = [i for i in range(n) if i not in plan.attn]
            full = model.config.to_dict()  # every field, not only those that differ from defaults
            _remove_layers(model, family, keep)
            model.save_pretrained(tmp)
            config = remap_for_blocks({**full, **_read_config(tmp)}, keep)
            # marks the folder as a drop (not an original checkpoint) and says what it was made from
            config[BLOCK_MARK] = {"dropped_blocks": list(plan.attn), "source_layers": n}
            _write_config(tmp, config)
        else:
            model.config.drop_attn_list, model.config.drop_mlp_list = list(plan.attn), list(plan.mlp)
            model.config.drop_sites = drop_sites(family)
            modeling_dropped.apply_drops(model, model.config)
            save_dropped(model, tmp)
        load_tokenizer(src).save_pretrained(tmp)
        if (Path(src) / "checkpoint.json").exists():  # its step and tokens, for study rows
            shutil.copy(Path(src) / "checkpoint.json", tmp / "checkpoint.json")
    return out


def save_dropped(model: nn.Module, folder: Path, **save_kwargs: Any) -> None:
    """Save a model carrying drop lists (`config.drop_attn_list` ...) in the dropped format:
    weights by `save_pretrained`, then config.json rewritten (model_type, auto_map), the modeling
    file and a README that says how to load it. Also used for quantized dropped models."""
    model.save_pretrained(folder, **save_kwargs)
    _write_config(folder, dropped_config(_read_config(folder)))
    shutil.copy(modeling_dropped.__file__, folder / "modeling_dropped.py")
    config = model.config
    (folder / "README.md").write_text(README.format(attn=list(config.drop_attn_list),
                                                    mlp=list(config.drop_mlp_list), stock=config.model_type))


def dropped_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stock config dict with drop lists -> the dropped format's config.json."""
    out = dict(config)
    out.pop("_name_or_path", None)  # the source folder: meaningless (and private) in the output
    stock = out.get("stock_model_type") or out["model_type"]
    out.update(model_type=MODEL_TYPE, stock_model_type=stock, auto_map=AUTO_MAP,
               architectures=["DroppedForCausalLM"])
    return out


def _read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _remove_layers(model: nn.Module, family: Family, keep: list[int]) -> None:
    layers = model.get_submodule(family.layers)
    parent, name = family.layers.rsplit(".", 1)
    setattr(model.get_submodule(parent), name, nn.ModuleList([layers[i] for i in keep]))


def _check_cache_anchor(config, plan: DropPlan, n: int, blocks: bool = False) -> None:
    """The cache reads sequence lengths from the first layer of each attention type."""
    types = getattr(config, "layer_types", None) or ["full_attention"] * n
    anchors = {t: types.index(t) for t in set(types)}
    hit = sorted(i for i in anchors.values() if i in plan.attn)
    if hit and blocks:
        bound = ", ".join(index_bound(config.to_dict()))
        raise DropError(f"cannot drop block {hit[0]} of this model: {bound} "
                        "ties each layer to its index, so the dropped model keeps every layer in place, and "
                        f"the KV cache reads the sequence length at layer {hit[0]}; keep that block")
    if hit:
        raise DropError(f"cannot drop the attention of layer {hit[0]}: the KV cache reads the sequence "
                        "length there (first layer of its attention type); drop its block instead")


def load_dropped(path: str | Path, **kwargs) -> nn.Module:
    """Load a dropped checkpoint (ours, or the study's released format: the family's model_type,
    drop lists, weights maybe still present, its own auto_map) with our one generic modeling code;
    no code from the folder is run."""
    config = modeling_dropped.stock_config(_read_config(Path(path)))
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
    if raw.get("drop_attn_list") or raw.get("drop_mlp_list") or raw.get("model_type") == MODEL_TYPE:
        return load_dropped(path, **kwargs).eval()
    from .._load import load_model
    return load_model(path, **kwargs)
