"""The synthetic tasks the built-in series trains on, so that dropping layers shows real degradation.

Two kinds of lines, each answerable only one way:
- facts (a rule learned from examples): "The bor-kel is red." A thing's colour follows from its kind,
  the part before the hyphen (32 kinds, four per colour), whatever its name (16 names). Kinds come in
  four tiers of eight, one kind of each colour per tier, each tier half as frequent in training as
  the one before, so builtin:tiny knows the common kinds well and the rare ones less, and what it
  knows fades by degrees as layers are dropped. Training sees half of the 512 kind-name pairs; the
  evaluation asks the other 256 (eight names per kind), so it measures the rule, not recall of lines
  seen in training. Eight-way: chance is 1/8;
- recall (in context): "List: caz bep dix fum. Again: caz bep dix fum." The evaluation stops the
  repeat at a random word and asks for the next of the four (chance 1/4), on lists drawn from another
  stream than training's. builtin:tiny does not learn it in 300 steps (it scores at chance), so the
  `builtin` preset leaves it out; its lines stay in training as part of the measured recipe.

`task_items(name)` makes the lm-eval items shipped in redundancy/data/tasks/<name>.jsonl; `write_task_files()`
rewrites those files, and tests/test_builtin_task.py checks that they match.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator

from .._data import DATA_DIR
from .._registry import unknown
from ..errors import NotFoundError

COLORS = ["red", "blue", "green", "gold", "pink", "teal", "gray", "black"]
# kind i has colour i % 8 and frequency tier i // 8 (tier 0 the most frequent)
KINDS = "bor kim tas lup vex dar mip zol quo fen gah rul nix wob jeb yat".split() + \
    "cug hif pov sek tuz bax dri gop jum kef lib mox nuf ris wez yob".split()
NAMES = "kel pim dov rax tib sul mek nop zig fap lod wum jir hob gev yun".split()
# recall's own words: a list word never names a fact, so the two tasks cannot help each other
WORDS = "caz bep dix fum gol hux jat kov lem mab nud pex ruk sib tof vag".split() + \
    "zed wic sut pag nem liv kud jop hed gim fos dut bim vor tep rog".split()
TASKS = ("builtin_facts", "builtin_recall")
FACT_SHARE = 0.4  # of training lines; the rest are recall lists
LIST_LEN = 4  # words in a recall list
N_RECALL = 256  # recall items, as many as facts: one item is under 0.4 points of accuracy
EVAL_SEED = 1_000_003  # evaluation draws its recall lists (and facts order) from its own stream


def color(kind: str) -> str:
    """The colour every thing of this kind has."""
    return COLORS[KINDS.index(kind) % len(COLORS)]


def tier(kind: str) -> int:
    """0 (most frequent in training) to 3; each tier holds one kind of every colour."""
    return KINDS.index(kind) // len(COLORS)


def held_out(kind: str, name: str) -> bool:
    """Half of the pairs, never in training: each kind keeps 8 of its 16 names for evaluation. A name is
    held out with the kinds of two tiers (every colour twice), so it hints at no colour."""
    return (tier(kind) + NAMES.index(name)) % 2 == 1


def fact_line(kind: str, name: str) -> tuple[str, str]:
    """(prompt, answer): "The bor-kel is" -> " red."."""
    return f"The {kind}-{name} is", f" {color(kind)}."


def recall_list(rng: random.Random) -> tuple[list[str], int]:
    """LIST_LEN distinct words and the position of the word to ask for."""
    return rng.sample(WORDS, LIST_LEN), rng.randrange(LIST_LEN)


def task_documents(seed: int = 0) -> Iterator[str]:
    """Endless documents of eight task lines: facts (training pairs only, kinds by tier) or recall lists."""
    rng = random.Random(seed)
    train = {k: [n for n in NAMES if not held_out(k, n)] for k in KINDS}
    weights = [2.0 ** -tier(k) for k in KINDS]
    while True:
        lines = []
        for _ in range(8):
            if rng.random() < FACT_SHARE:
                kind = rng.choices(KINDS, weights)[0]
                lines.append("".join(fact_line(kind, rng.choice(train[kind]))))
            else:
                words = " ".join(recall_list(rng)[0])
                lines.append(f"List: {words}. Again: {words}.")
        yield "\n".join(lines)


def task_items(name: str) -> list[dict]:
    """The lm-eval items of built-in task `name` (one of TASKS); deterministic. Raises NotFoundError for
    any other name."""
    if name == "builtin_facts":
        choices = [f" {c}." for c in COLORS]
        items = [{"prompt": fact_line(k, n)[0], "choices": choices, "answer": COLORS.index(color(k))}
                 for k in KINDS for n in NAMES if held_out(k, n)]
        random.Random(EVAL_SEED).shuffle(items)  # so that lm-eval's --limit N samples every colour and tier
        return items
    if name == "builtin_recall":
        rng = random.Random(EVAL_SEED)
        items = []
        for _ in range(N_RECALL):
            words, q = recall_list(rng)
            prompt = f"List: {' '.join(words)}. Again:" + "".join(f" {w}" for w in words[:q])
            items.append({"prompt": prompt, "choices": [f" {w}" for w in words], "answer": q})
        return items
    raise NotFoundError(unknown("built-in task", name, TASKS))


def task_jsonl(name: str) -> str:
    """The text of redundancy/data/tasks/<name>.jsonl: one item a line."""
    return "".join(json.dumps(item) + "\n" for item in task_items(name))


def write_task_files(folder: Path = DATA_DIR / "tasks") -> list[Path]:
    """Rewrite every built-in task's jsonl from the generator (after changing this module)."""
    paths = [folder / f"{name}.jsonl" for name in TASKS]
    for name, path in zip(TASKS, paths):
        path.write_text(task_jsonl(name))
    return paths
