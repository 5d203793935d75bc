"""The study's chain on one checkpoint: drop plans from orders -> evaluate -> time -> quantize,
everything into one results store (resumable: finished models and rows are kept)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .._atomic import atomic_file
from .._config import check_text_only, pad_id, position_limit
from ..drop import DropPlan, load_any, materialize
from ..errors import RedundancyError, SeriesError, one_line
from ..sources._checkpoint import local_digest
from .results import BASELINE, has_results, open_results, write_results
from .settings import StudySettings

Order = Sequence  # layers (attn, mlp, block) or (module, layer) pairs (joint), most redundant first


@dataclass(frozen=True)
class Variant:
    """One model of the table: a plan (or the baseline), maybe quantized, and where it lives."""

    name: str
    path: Path
    kind: str
    n_dropped: int
    quant: str = "none"
    recipe: dict[str, Any] = field(default_factory=dict)  # what made it (_once, _row_recipe)


def plans(orders: dict[str, Order], ks: dict[str, list[int]]) -> list[DropPlan]:
    """DropPlan.from_order for every kind and count asked for. Raises RedundancyError (a count past an
    order's end), NotFoundError (an unknown plan kind)."""
    for kind, counts in ks.items():
        if kind in orders and (over := [k for k in counts if k > len(orders[kind])]):
            raise RedundancyError(f"--k {kind}={over[0]}: the {kind} order has only {len(orders[kind])} "
                                  f"entries; ask for at most {len(orders[kind])}")
    return [DropPlan.from_order(kind, orders[kind], k) for kind, counts in ks.items() if kind in orders
            for k in counts]


def run_study(checkpoint: Path, orders: dict[str, Order], out: Path, s: StudySettings, model: str, step: int,
              log: Callable[[str], None] = print) -> Path:
    """Materialize, evaluate and time every plan and the baseline, quantize the chosen plans; returns
    the results store `out / results.zarr`. Models are kept under `out / models`.
    Raises what check_settings and check_checkpoint raise (before any work), OutputError (a model
    folder holding something else), StoreError (a results store it cannot write), and lm-eval's and
    llmcompressor's failures as the toolkit's one-line errors where they are known."""
    s = check_settings(checkpoint, s)
    quantized = s.quantize_plans or [p.name for p in plans(orders, s.ks) if p.kind == "attn"][-1:]
    check_checkpoint(checkpoint, s, out=out, n_models=len(plans(orders, s.ks)) + len(s.quantize),
                     quantizes=bool(quantized and s.quantize))
    results, models = out / "results.zarr", out / "models"
    weights = local_digest(Path(checkpoint))  # what every model and row here is made from
    variants = [Variant(BASELINE, Path(checkpoint), BASELINE, 0, recipe={"weights": weights})]
    for plan in plans(orders, s.ks):
        recipe = {"weights": weights, "drop_attn": list(plan.attn), "drop_mlp": list(plan.mlp)}
        path = _once(models / plan.name, recipe, log,
                     lambda d, over, p=plan: materialize(checkpoint, p, d, over))
        variants.append(Variant(plan.name, path, plan.kind, plan.n_dropped, recipe=recipe))
    attn = [v.name for v in variants if v.kind == "attn"]
    for v in [v for v in variants if v.name in (s.quantize_plans or attn[-1:])]:
        for method in s.quantize:
            recipe = {**v.recipe, "quantize": method, "group_size": s.group_size,
                      "quant_samples": s.quant_samples, "n_grid": s.n_grid}
            path = _once(models / f"{v.name}+{method}", recipe, log,
                         lambda d, over, m=method, src=v.path: _quantize(src, d, m, s, over))
            variants.append(Variant(f"{v.name}+{method}", path, v.kind, v.n_dropped, method, recipe))
    _measure_all(variants, results, model, step, s, log)
    return results


def _row_recipe(v: "Variant", step: int, s: StudySettings) -> dict[str, Any]:
    """Every input that changes a results row: the model's recipe, the step, and the evaluation,
    perplexity and timing settings (not the batch sizes or the device: they change speed, and a
    row times its plans on the device it names)."""
    return {**v.recipe, "step": int(step), "preset": s.preset, "tasks": sorted(s.tasks), "limit": s.limit,
            "ppl_sets": sorted(map(list, s.ppl_sets.items())), "ppl_samples": s.ppl_samples,
            "ppl_seq_len": s.ppl_seq_len, "scored": list(s.scored), "prompt": s.prompt_tokens,
            "new": s.new_tokens, "speed_batch": s.speed_batch, "repeats": s.repeats, "device": s.device}


def _changed(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


PAPER_TIMING = 2048  # prompt and new tokens of the study's speed measurement (DESIGN.md)


def timing_lengths(prompt: int | None, new: int | None, limit: int | None) -> tuple[int, int]:
    """(prompt, new) tokens of a timed generation: given values as they are; a missing one is the
    study's 2048, or half the model's `limit` positions where that is less. Raises nothing on purpose."""
    default = PAPER_TIMING if limit is None else max(min(PAPER_TIMING, limit // 2), 1)
    return (default if prompt is None else prompt), (default if new is None else new)


def check_settings(checkpoint: Path, s: StudySettings) -> StudySettings:
    """Refuse, before any work, what StudySettings could not check when it was built: lengths past
    the model's context: --prompt + --new tokens, and held-out windows, must fit the positions its
    config.json names (max_position_embeddings, n_positions, ...: _config.max_positions).

    Returns `s` with the timing lengths resolved (`timing_lengths`).
    Raises RedundancyError naming the option and the value; NotFoundError (an unknown kind, method,
    evaluation preset or lm-eval task, with the closest names); SeriesError (no readable config.json).
    """
    from .._config import max_positions, read_config

    limit = max_positions(read_config(checkpoint))
    prompt, new = timing_lengths(s.prompt_tokens, s.new_tokens, limit)
    s = replace(s, prompt_tokens=prompt, new_tokens=new)
    if limit is not None and s.prompt_tokens + s.new_tokens > limit:
        raise RedundancyError(f"--prompt {s.prompt_tokens} + --new {s.new_tokens} = "
                              f"{s.prompt_tokens + s.new_tokens} tokens exceed the {limit} positions of "
                              f"{checkpoint} (config.json); pass --prompt and --new summing to at most "
                              f"{limit}")
    windows = s.ppl_seq_len or (s.scored[1] if s.ppl_sets else None)
    if limit is not None and windows and windows > limit:
        raise RedundancyError(f"held-out windows of {windows} tokens exceed the {limit} positions of "
                              f"{checkpoint} (config.json); pass --ppl-seq-len {limit} or less")
    return s


def check_checkpoint(checkpoint: Path, s: StudySettings, *, out: Path | None = None,
                     n_models: int = 0, quantizes: bool = True) -> None:
    """Refuse, before any model is written or evaluated, what the chain could not carry to its end:
    the config and tokenizer (loaded as the chain loads them), every eos and pad id in config.json,
    generation_config.json and the tokenizer, timing and perplexity windows against a learned
    position table, the 4-bit group size against every layer width (on an empty, meta-device copy
    of the model), enough held-out windows for perplexity (packed now and cached for the chain), and
    free disk under `out` for `n_models` models the size of the checkpoint's weights. `quantizes`:
    whether any plan is to be quantized (s.quantize names the methods).

    Raises SeriesError (no readable config or tokenizer), UnsupportedFamilyError (a multimodal
    wrapper: dropping and quantizing read the family table), RedundancyError (eos or pad ids that are
    not ids; timing or perplexity windows longer than a learned position table; a group size that
    does not divide a layer width; too little free disk), CalibrationError (too few held-out windows).
    """
    checkpoint = Path(checkpoint)
    config, generation = _configs(checkpoint)
    check_text_only(config, str(checkpoint))
    tokenizer = _tokenizer(checkpoint)
    _check_ids(config, generation, tokenizer)
    limit = position_limit(config)
    if limit is not None and s.prompt_tokens + s.new_tokens > limit:
        raise RedundancyError(f"--prompt {s.prompt_tokens} + --new {s.new_tokens} tokens exceed "
                              f"{checkpoint}'s {limit} positions (a learned position table: "
                              "max_position_embeddings or n_positions); time it with --prompt and --new "
                              f"summing to at most {limit}")
    ppl_len = s.ppl_seq_len or s.scored[1]
    if limit is not None and s.ppl_sets and ppl_len > limit:
        raise RedundancyError(f"held-out perplexity windows of {ppl_len} tokens exceed {checkpoint}'s "
                              f"{limit} positions; pass --ppl-seq-len {limit} or less")
    if quantizes and s.quantize:
        _check_widths(config, s.group_size)
    if s.ppl_sets and s.ppl_samples > 0:
        from ..calibration import heldout_tokens
        for spec, text_field in s.ppl_sets.values():
            heldout_tokens(spec, tokenizer, n=s.ppl_samples, seq_len=ppl_len, scored=s.scored,
                           text_field=text_field)
    if out is not None and n_models:
        _check_room(checkpoint, Path(out), n_models)


def check_evaluation(checkpoint: Path, *, preset: str | None, tasks: Sequence[str]) -> Any:
    """Refuse, before a model is loaded or evaluated, what `evaluate` could not carry to its end:
    nothing to evaluate (no preset, no task), the config, the tokenizer (loaded as the evaluation
    loads it, never running the folder's code), every eos and pad id in config.json,
    generation_config.json and the tokenizer. Preset and task names are checked when StudySettings
    (or the command line) takes them. Returns the tokenizer.

    Raises RedundancyError (nothing to evaluate; eos or pad ids that are not ids), SeriesError (no
    readable config or tokenizer).
    """
    if not preset and not list(tasks or []):
        raise RedundancyError("nothing to evaluate: pass --preset (builtin or paper) or --task names")
    checkpoint = Path(checkpoint)
    config, generation = _configs(checkpoint)
    tokenizer = _tokenizer(checkpoint)
    _check_ids(config, generation, tokenizer)
    return tokenizer


def _check_ids(config: Any, generation: Any, tokenizer: Any) -> None:
    """Every eos and pad id in the config, generation config and tokenizer read as generation and
    lm-eval read them: a malformed one (not an int or a list of ints) is a RedundancyError here."""
    from .._config import eos_ids

    pad_id(config, generation, tokenizer)
    eos_ids(config, generation, tokenizer)


def _tokenizer(checkpoint: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=False)  # never a prompt
    except Exception as exc:  # noqa: BLE001 - missing files, a tokenizer class this transformers lacks
        raise SeriesError(f"cannot load the tokenizer of {checkpoint}: {one_line(exc)}; save one beside the "
                          "weights (tokenizer.save_pretrained)") from None


def _check_widths(config: Any, group_size: int) -> None:
    """quantize.check_group_size on the model built on the meta device (no memory, no weights read)."""
    import torch
    from transformers import AutoModelForCausalLM

    from .quantize import check_group_size

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - a dropped folder's own class: quantize checks it when loaded
        return
    check_group_size(skeleton, group_size)


def _check_room(checkpoint: Path, out: Path, n_models: int) -> None:
    """Free disk under `out` for `n_models` models no larger than `checkpoint`'s weight files."""
    import shutil

    weights = sum(f.stat().st_size for f in checkpoint.iterdir()
                  if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file())
    models = out / "models"
    made = sum(f.stat().st_size for f in models.rglob("*") if f.is_file()) if models.exists() else 0
    need = max(n_models * weights - made, 0)
    where = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise RedundancyError(f"the study's {n_models} models need up to {need / 2**30:.1f} GiB under "
                              f"{out}; {where} has {free / 2**30:.1f} GiB free: free some space or pass "
                              "another --out")


def _configs(path: Path) -> tuple:
    """(config, generation config or None) as from_pretrained reads them; SeriesError if unreadable."""
    from transformers import GenerationConfig

    from ..drop import checkpoint_config

    try:
        config = checkpoint_config(path)  # a dropped folder too, without running its code
        generation = (GenerationConfig.from_pretrained(path) if (path / "generation_config.json").exists()
                      else None)
    except Exception as exc:  # noqa: BLE001 - a missing or malformed file, an unknown model_type
        raise SeriesError(f"cannot read the config of {path}: {one_line(exc)}; pass a Hugging Face "
                          "checkpoint folder") from None
    return config, generation


def _quantize(src: Path, dst: Path, method: str, s: StudySettings, overwrite: bool) -> Path:
    from .quantize import quantize
    return quantize(src, dst, method=method, group_size=s.group_size, n_samples=s.quant_samples,
                    n_grid=s.n_grid, overwrite=overwrite)


def _once(path: Path, recipe: dict[str, Any], log: Callable[[str], None],
          make: Callable[[Path, bool], Path]) -> Path:
    """`make(path, overwrite)` unless a complete model made from `recipe` is there. A killed run
    leaves no half model (make writes atomically; the recipe, `<path>.recipe.json`, is written after
    it: a model without one is made again). A model made from other inputs (another checkpoint,
    plan or 4-bit setting) is made again, said in `log`, never reused."""
    mark = path.with_name(path.name + ".recipe.json")
    if (path / "config.json").exists():
        stored = _read_recipe(mark)
        if stored == recipe:
            return path
        what = ", ".join(_changed(stored, recipe)) if stored else "no record of what made it"
        log(f"{path.name}: the model in {path.parent} was made from other inputs ({what}); making it again")
    log(f"{'quantize' if 'quantize' in recipe else 'materialize'} {path.name}")
    made = make(path, path.exists())  # replaced whole, or made where nothing complete was
    atomic_file(mark, json.dumps(recipe, sort_keys=True))
    return made


def _read_recipe(mark: Path) -> dict[str, Any]:
    try:
        return _parse_recipe(mark.read_text())
    except OSError:
        return {}


def _parse_recipe(text: Any) -> dict[str, Any]:
    """A stored recipe; {} for none (NaN in a row written before rows had one) or a damaged one."""
    try:
        recipe = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return recipe if isinstance(recipe, dict) else {}


PARTS = ("evaluate", "perplexity", "speed")  # a row's parts, each stored the moment it exists
TIMING = "paired"  # in every row's recipe: rows timed before pairing are timed again


def _missing(results: Path, model: str, step: int, plan: str, ppl_sets: list[str],
             recipe: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> list[str]:
    """The parts of a row (PARTS) not yet stored from `recipe`: all of them where the row was
    measured from other inputs (said in `log`; write_results forgets its values on the next write)."""
    if not has_results(results):
        return list(PARTS)
    ds = open_results(results)
    if plan not in ds["plan"].values or model not in ds["model"].values or step not in ds["step"].values:
        return list(PARTS)
    row = ds.sel(plan=plan, model=model, step=step)
    if recipe is not None:
        stored = _parse_recipe(row["recipe"].item()) if "recipe" in ds else {}
        recipe = json.loads(json.dumps(recipe))  # as stored: tuples (ppl_sets' specs) read back as lists
        if stored != recipe:
            if any(v in row and bool(row[v].notnull().any()) for v in ("tokens_per_s", "score")):
                what = ", ".join(_changed(stored, recipe)) if stored else "no record of what made it"
                log(f"{plan}: its row was measured from other inputs ({what}); measuring it again")
            return list(PARTS)
    ppl = row["perplexity"].reindex(dataset=ppl_sets) if ppl_sets and "perplexity" in ds else None
    has = {"evaluate": "score" in row and bool(row["score"].notnull().any()),
           "perplexity": not ppl_sets or (ppl is not None and bool(ppl.notnull().all())),
           "speed": "tokens_per_s" in row and bool(row["tokens_per_s"].notnull())}
    return [part for part in PARTS if not has[part]]


def _done(results: Path, model: str, step: int, plan: str, ppl_sets: list[str],
          recipe: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> bool:
    """True when the row has task scores, a speed and the perplexity of every set asked for, all
    measured from `recipe` (a row measured from other inputs is measured again, said in `log`)."""
    return not _missing(results, model, step, plan, ppl_sets, recipe, log)


def _measure_all(variants: list[Variant], results: Path, model: str, step: int, s: StudySettings,
                 log: Callable[[str], None]) -> None:
    """Evaluate (lm-eval, then held-out perplexity) every variant, then time each against the baseline
    in pairs. Each result is written the moment it exists, so a kill loses only the step under way;
    a rerun does only the parts `_missing` names. Progress: "[i/n] phase plan (elapsed)" in `log`."""
    import time

    start, n = time.monotonic(), len(variants)
    recipes = {v.name: {**_row_recipe(v, step, s), "timing": TIMING} for v in variants}

    def say(i: int, phase: str, v: Variant) -> None:
        log(f"[{i + 1}/{n}] {phase} {v.name} ({time.monotonic() - start:.0f} s)")

    for i, v in enumerate(variants):
        todo = _missing(results, model, step, v.name, list(s.ppl_sets), recipes[v.name], log)
        if "evaluate" in todo or "perplexity" in todo:
            _evaluate(v, results, model, step, s, recipes[v.name], todo,
                      lambda phase, i=i, v=v: say(i, phase, v))
    timed = [(i, v) for i, v in enumerate(variants)
             if "speed" in _missing(results, model, step, v.name, list(s.ppl_sets), recipes[v.name], log)]
    if timed:
        _time_all(variants[0], timed, results, model, step, s, recipes, say)


def _load(v: Variant, s: StudySettings) -> tuple[Any, Any]:
    """The variant's model on the study's device and its tokenizer. The tokenizer is read with
    trust_remote_code=False (load_tokenizer): a dropped folder's config names the toolkit's code in
    auto_map, and with trust_remote_code unset transformers asks on stdin whether to run it (a
    study in a terminal waited on a prompt; one with stdin on a pipe read its input)."""
    from .._load import load_tokenizer
    return load_any(v.path).to(s.device), load_tokenizer(v.path)


def _evaluate(v: Variant, results: Path, model: str, step: int, s: StudySettings, recipe: dict[str, Any],
              todo: list[str], say: Callable[[str], None]) -> None:
    """lm-eval scores, stored; then held-out perplexity, stored."""
    from .evaluate import evaluate_with_stderr
    from .perplexity import heldout_perplexity

    lm, tokenizer = _load(v, s)
    row = dict(kind=v.kind, n_dropped=v.n_dropped, quant=v.quant, recipe=json.dumps(recipe, sort_keys=True))
    if "evaluate" in todo:
        say("evaluate")
        scores, stderr = evaluate_with_stderr(lm, tokenizer, preset=s.preset, tasks=s.tasks,
                                              batch_size=s.eval_batch, limit=s.limit)
        write_results(results, model, step, v.name, scores, stderr=stderr, **row)
    if "perplexity" in todo and s.ppl_sets:
        say("perplexity")
        ppl = heldout_perplexity(lm, tokenizer, sets=s.ppl_sets, n=s.ppl_samples,
                                 seq_len=s.ppl_seq_len or s.scored[1], scored=s.scored,
                                 batch_size=s.eval_batch)
        write_results(results, model, step, v.name, perplexity=ppl, **row)


def _time_all(base: Variant, timed: list[tuple[int, Variant]], results: Path, model: str, step: int,
              s: StudySettings, recipes: dict[str, dict[str, Any]],
              say: Callable[[int, str, Variant], None]) -> None:
    """The baseline timed alone (its tokens/s), every plan in pairs with it (speed.paired_speed),
    with its physical bound (speed.speedup_bound); each row stored as it is timed."""
    from .speed import measure_speed, module_costs, paired_speed, speedup_bound

    baseline, tokenizer = _load(base, s)
    costs = module_costs(baseline, s.prompt_tokens, s.new_tokens)
    bits = _weight_bits(baseline)
    for i, v in timed:
        say(i, "speed", v)
        if v.name == base.name:
            speed = measure_speed(baseline, s.prompt_tokens, s.new_tokens, s.speed_batch, repeats=s.repeats,
                                  tokenizer=tokenizer)
        else:
            lm, _ = _load(v, s)
            bound = speedup_bound(costs, v.recipe.get("drop_attn", ()), v.recipe.get("drop_mlp", ()),
                                  weight_ratio=bits / 4 if v.quant != "none" else 1.0)
            pairs = s.repeats  # (baseline, plan) pairs, timed alternately
            speed = paired_speed(baseline, lm, s.prompt_tokens, s.new_tokens, s.speed_batch, pairs=pairs,
                                 tokenizer=tokenizer, bound=bound)
            del lm
        write_results(results, model, step, v.name, speed=speed.to_dict(), kind=v.kind,
                      n_dropped=v.n_dropped, quant=v.quant,
                      recipe=json.dumps(recipes[v.name], sort_keys=True))


def _weight_bits(model: Any) -> int:
    """Bits per weight of the model's floating-point parameters (16 for bf16, 32 for fp32)."""
    p = next(model.parameters())
    return p.element_size() * 8

