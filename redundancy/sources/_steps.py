"""The training step, tokens and stage of one checkpoint folder, read one way everywhere: local series
(`score local:DIR`), `study` and `evaluate` all call `read_step`.

Sources, the first that answers wins:
1. `checkpoint.json`, our own ({"step": N, "tokens": T, "stage": S}; sources/_tiny.py, _megatron.py);
2. `trainer_state.json`, the Hugging Face Trainer's (`global_step`, and `num_input_tokens_seen` when
   the run counted them: transformers/trainer_callback.py TrainerState);
3. `latest_checkpointed_iteration.txt`, Megatron-LM's tracker file, holding the iteration
   (megatron/training/checkpointing.py, get_checkpoint_tracker_filename);
4. the name, read with a series preset's pattern when one is given (--preset / --pattern:
   sources/_presets.py, data/series_presets.yaml), else with the names public histories use:

   `1000`                        a bare number: the step
   `step1000`, `step-1000`       Pythia branches (EleutherAI/pythia-160m), SmolLM2 branches
                                 (HuggingFaceTB/SmolLM2-360M-intermediate-checkpoints), our folders
   `step1000-tokens4B`           OLMo branches (allenai/OLMo-7B-0424-hf): tokens = 4 x 1e9
   `stage1-step1000-tokens5B`    OLMo-2 branches (allenai/OLMo-2-1124-7B), also
                                 `stage2-ingredient1-step1000-tokens5B`; `stage1-step1000` (OLMo-3),
                                 `stage1-step-1000` (SmolLM3-3B-checkpoints)
   `...-step-480k-token-1007B`   TinyLlama repos (`-step-480k-1T`, `-step-955k-token-2T`) and the
                                 MAP-Neo / K2 style: `k` = x 1000 steps; tokens in K, M, B or T
   `step-1000-10BT`              FineWeb ablation branches (HuggingFaceFW/ablation-model-fineweb-edu)
   `checkpoint-1000`             the Hugging Face Trainer: f"{PREFIX_CHECKPOINT_DIR}-{global_step}",
                                 PREFIX_CHECKPOINT_DIR = "checkpoint" (transformers/trainer.py)
   `global_step1000`             DeepSpeed's default tag f"global_step{global_steps}"
                                 (deepspeed/runtime/engine.py save_checkpoint); BLOOM's branches
   `iter_0001000`                Megatron-LM, f"iter_{iteration:07d}" (megatron/training/
                                 checkpointing.py get_checkpoint_name); MAP-Neo's folders;
                                 `pretrain_iter_N` / `anneal_iter_N`: OpenCoder's stages
   `ckpt_000`                    LLM360 Amber / K2 branches

   A name with one such step marker is read whatever other numbers it holds (`TinyLlama-1.1B-...`:
   1.1B is the size); one whose only number ends it after a separator (`model-1000`) gives that
   number; anything else (`run3-1000`: two numbers, none marked) is refused rather than guessed.

A Hugging Face cache tree (`models--ORG--NAME/refs/<branch>` files holding a commit sha, the files in
`snapshots/<sha>/`) names each snapshot by its commit: its name is the branch in `refs/` that points
at it (huggingface_hub's cache layout); a snapshot no branch points at is refused.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SeriesError
from ._presets import PRESETS, Preset, check_tokens_per_step, make_preset

_STEP = re.compile(r"(?<![A-Za-z])(?:global_step|step|checkpoint|ckpt|iter)[-_]?(?P<n>\d+)(?P<k>[kK])?"
                   r"(?![A-Za-z0-9])")
# tokens right after the step: marked (`-tokens4B`, `-token-1007B`) or carrying a unit (`-1T`, `-10BT`)
_TOKENS = re.compile(r"[-_](?:tokens?[-_]?(?P<a>\d+(?:\.\d+)?)(?P<ua>[KMBGT]?)"
                     r"|(?P<b>\d+(?:\.\d+)?)(?P<ub>[KMBGT]))T?(?![A-Za-z0-9])")
_STAGE = re.compile(r"(?<![A-Za-z])stage[-_]?\d+(?:-ingredient\d+)?(?![A-Za-z0-9])")
_LONE = re.compile(r"(?:[A-Za-z][A-Za-z_.-]*[-_])?(?P<n>\d+)")  # `1000`, `model-1000`: one number, at the end
_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
TRACKER = "latest_checkpointed_iteration.txt"


@dataclass(frozen=True)
class StepReading:
    """What `read_step` found: the step, tokens seen (None when nothing says), the training stage
    ("" for single-stage runs), the name it was read from (folder name or cache branch) and, in a
    Hugging Face cache tree, the snapshot's commit."""

    step: int
    tokens: float | None = None
    stage: str = ""
    revision: str = ""
    commit: str | None = None


class UnreadableName(SeriesError):
    """A name that gives no step without guessing; `local_checkpoints` lists every such folder."""

    def __init__(self, name: str, why: str, fix: str) -> None:
        self.name, self.why, self.fix = name, why, fix
        super().__init__(f"cannot tell the training step of {name}: {why}; {fix}")


def read_step(folder: str | Path, *, preset: str | Preset | None = None, pattern: str | None = None,
              tokens_per_step: float | None = None) -> StepReading:
    """(step, tokens, stage) of a checkpoint folder, from its files, else its name (module docstring).

    preset/pattern: how names read (a registered preset, or a regex with a (?P<step>...) group);
    tokens_per_step: tokens = step x this where nothing else says.
    Raises SeriesError: a cache snapshot no branch points at, a tracker file without a number, a
    checkpoint.json or trainer_state.json that is not JSON or holds a step that is not a whole
    number >= 0 or tokens that are not a finite number >= 0 (naming the file), tokens_per_step
    not above 0; UnreadableName (a SeriesError): a name read by no rule, or not matching the given pattern.
    """
    folder = Path(folder)
    check_tokens_per_step(tokens_per_step)
    p = _preset(preset, pattern, tokens_per_step)
    names, commit = _names(folder)
    revision = names[0] if names else folder.name
    found = _from_files(folder)
    if found is None:
        if not names:
            raise SeriesError(f"{folder} is a snapshot of a Hugging Face cache no branch in "
                              f"{folder.parent.parent / 'refs'} points at, so its step is unknown: "
                              "download it again by branch name, or add checkpoint.json "
                              '({"step": N, "tokens": T})')
        revision, found = _from_names(names, p)
    step, tokens, stage = found
    if tokens is None and tokens_per_step is not None:
        tokens = step * float(tokens_per_step)
    return StepReading(step, tokens=tokens, stage=stage, revision=revision, commit=commit)


def _preset(preset: str | Preset | None, pattern: str | None, tokens_per_step: float | None) -> Preset | None:
    if isinstance(preset, Preset):
        return preset
    if preset is None and pattern is None:
        return None
    return make_preset(preset, pattern, tokens_per_step)


def _names(folder: Path) -> tuple[list[str], str | None]:
    """The names the folder goes by: its own, or in a cache tree the branches pointing at it."""
    refs = folder.parent.parent / "refs"
    if folder.parent.name != "snapshots" or not refs.is_dir():
        return [folder.name], None
    sha = folder.name
    branches = sorted(r.relative_to(refs).as_posix() for r in refs.rglob("*")
                      if r.is_file() and r.read_text().strip() == sha)
    return branches, sha


def _from_files(folder: Path) -> tuple[int, float | None, str] | None:
    """What the folder's own files say, else None. Raises SeriesError, naming the file, for a file
    that is not JSON or holds a step that is not a whole number >= 0, or tokens that are not a
    finite number >= 0."""
    meta = folder / "checkpoint.json"
    if meta.exists():
        d = _json(meta, "step")
        return _step(d["step"], meta, "step"), _tokens(d.get("tokens"), meta, "tokens"), _stage_of(d, meta)
    state = folder / "trainer_state.json"
    if state.exists():
        d = _json(state, "global_step")
        seen = _tokens(d.get("num_input_tokens_seen"), state, "num_input_tokens_seen")
        return _step(d["global_step"], state, "global_step"), seen or None, ""  # 0: the run did not count
    tracker = folder / TRACKER
    if tracker.exists():
        text = tracker.read_text().strip()
        if not re.fullmatch(r"[0-9]+", text):  # Megatron writes "release" for converted checkpoints
            raise SeriesError(f"{tracker} says {text!r}, not an iteration; add checkpoint.json "
                              '({"step": N, "tokens": T})')
        return int(text), None, ""
    return None


_FIX = 'write it as {"step": N, "tokens": T} with N a whole number >= 0 and T a number of tokens or null'


def _json(file: Path, key: str) -> dict:
    """A JSON object holding `key`. Raises SeriesError naming the file."""
    try:
        d = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SeriesError(f"{file} is not JSON ({exc}); {_FIX}") from None
    if not isinstance(d, dict) or key not in d:
        raise SeriesError(f"{file} holds no {key!r}; {_FIX}")
    return d


def _step(value: object, file: Path, key: str) -> int:
    """A whole number >= 0: an int, a float with nothing after the point (1000.0), or a string of
    digits ("1000"); not a bool, 1.5, -1, "1k", NaN or inf. Raises SeriesError naming the file."""
    step = None
    if isinstance(value, int) and not isinstance(value, bool):
        step = value
    elif isinstance(value, float) and value.is_integer():
        step = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        step = int(value)
    if step is None or step < 0:
        raise SeriesError(f"{file}: {key} {json.dumps(value)} is not a training step (a whole number "
                          f">= 0); {_FIX}")
    return step


def _tokens(value: object, file: Path, key: str) -> float | None:
    """None, or a finite number >= 0 (a number or a numeric string); not a bool, NaN or inf.
    Raises SeriesError naming the file."""
    if value is None:
        return None
    tokens = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        tokens = float(value)
    elif isinstance(value, str):
        try:
            tokens = float(value)
        except ValueError:
            pass
    if tokens is None or not math.isfinite(tokens) or tokens < 0:
        raise SeriesError(f"{file}: {key} {json.dumps(value)} is not a number of tokens (finite, >= 0); "
                          f"{_FIX}")
    return tokens


def _stage_of(d: dict, file: Path) -> str:
    stage = d.get("stage") or ""
    if not isinstance(stage, str):
        raise SeriesError(f"{file}: stage {json.dumps(stage)} is not a name; write it as a string, "
                          'e.g. "stage1"')
    return stage


def _from_names(names: list[str], p: Preset | None) -> tuple[str, tuple[int, float | None, str]]:
    """(the name read, its reading): every name that reads must agree (several branches may point at
    one snapshot: `main` reads as nothing and is skipped)."""
    readings, failures = {}, []
    for name in names:
        try:
            readings[name] = _read_name(name, p)
        except UnreadableName as exc:
            failures.append(exc)
    if not readings:
        if len(failures) == 1:
            raise failures[0]
        raise UnreadableName(", ".join(names), "none of these branches reads as a step", failures[0].fix)
    if len(set(readings.values())) > 1:
        seen = ", ".join(f"{n} (step {r[0]})" for n, r in readings.items())
        raise UnreadableName(seen, "these branches point at one snapshot but read as different steps",
                             _fix(names[0]))
    name = next(iter(readings))
    return name, readings[name]


def _read_name(name: str, p: Preset | None) -> tuple[int, float | None, str]:
    """One name -> (step, tokens, stage), with the preset when given, else the public names."""
    if p is not None:
        got = p.parse(name)
        if got is None:
            raise UnreadableName(name, f"it does not match the pattern {p.pattern!r}"
                                 + (f" of preset {p.name}" if p.name != "custom" else ""), _fix(name))
        return got
    marks = list(_STEP.finditer(name))
    if len(marks) > 1:
        raise UnreadableName(name, "several step markers in one name", _fix(name))
    if marks:
        return _marked(name, marks[0])
    if lone := _LONE.fullmatch(name):
        return int(lone.group("n")), None, ""
    # the reason names no number: several folders of one series share it, and one line lists them
    numbers = re.findall(r"\d+", name)
    why = ("several numbers, none marked as the step" if len(numbers) > 1
           else "its one number is not marked as the step" if numbers else "no step number in it")
    raise UnreadableName(name, why, _fix(name))


def _marked(name: str, m: re.Match) -> tuple[int, float | None, str]:
    """The step of a marker (x 1000 for `480k`), tokens right after it, the stage before it."""
    step = int(m.group("n")) * (1000 if m.group("k") else 1)
    t = _TOKENS.match(name, m.end())
    tokens = None
    if t:
        number, unit = (t.group("a"), t.group("ua")) if t.group("a") else (t.group("b"), t.group("ub"))
        tokens = float(number) * _UNITS[unit.upper()]
    return step, tokens, _stage(name[:m.start()])


def _stage(before: str) -> str:
    """`stage1`, `stage2-ingredient1`, or a stage word a preset knows (OpenCoder's `pretrain_`)."""
    if s := _STAGE.search(before):
        return s.group(0)
    word = before.rstrip("-_")
    return word if before != word and word in known_stage_order() else ""


def known_stage_order() -> tuple[str, ...]:
    """Stage words in training order, from the presets' stage_order (opencoder: pretrain, anneal)."""
    return tuple(dict.fromkeys(s for name in PRESETS.names() for s in PRESETS.get(name).stage_order))


def _fix(name: str) -> str:
    """How to say the step: checkpoint.json, or a pattern built from the name (its last number as
    the step: an example to check, not a guess acted upon), or --step for one checkpoint."""
    parts = re.split(r"(\d+)", name)  # odd indices are the numbers
    last = len(parts) - 2 if len(parts) > 1 else None
    pattern = "".join("(?P<step>\\d+)" if i == last else "\\d+" if i % 2 else re.escape(t).replace("\\-", "-")
                      for i, t in enumerate(parts))
    example = f"--pattern '^{pattern}$'" if last is not None else "--pattern with a (?P<step>\\d+) group"
    return ('add checkpoint.json ({"step": N, "tokens": T}) to each folder, or say how names read: '
            f"{example} (score local:) or --step N (study, evaluate)")
