"""The synthetic task the built-in series learns, so that dropping layers shows real degradation.

Two kinds of lines, each answerable only one way:
- facts (memorised, MLP-heavy): "The zorb is teal." for a fixed table of made-up things;
- recall (in context, attention-heavy): "Remember: bor=red, kim=blue, ... So kim is blue."
"""
from __future__ import annotations

import random
from typing import Iterator

COLORS = ["red", "blue", "green", "gold", "pink", "teal", "gray", "black"]
_SYL = ["bor", "kim", "tas", "lup", "vex", "dar", "mip", "zol", "quo", "fen", "gah", "rul"]
THINGS = [a + b for a in _SYL[:8] for b in ("b", "n", "t", "x")]  # 32 made-up nouns
FACTS = {t: COLORS[(i * 5 + 3) % len(COLORS)] for i, t in enumerate(THINGS)}  # fixed table


def fact_line(thing: str) -> tuple[str, str]:
    """(prompt, answer): "The borb is" -> " teal"."""
    return f"The {thing} is", f" {FACTS[thing]}."


def recall_line(rng: random.Random, k: int = 4) -> tuple[str, str, list[str]]:
    """(prompt, answer, choices) for an in-context lookup of k key=value pairs."""
    keys = rng.sample(_SYL, k)
    values = rng.sample(COLORS, k)
    pairs = ", ".join(f"{a}={b}" for a, b in zip(keys, values))
    q = rng.randrange(k)
    return f"Remember: {pairs}. So {keys[q]} is", f" {values[q]}.", values


def task_documents(seed: int = 0) -> Iterator[str]:
    """Endless documents of eight task lines, half facts and half recall."""
    rng = random.Random(seed)
    while True:
        lines = []
        for _ in range(8):
            if rng.random() < 0.5:
                prompt, answer = fact_line(rng.choice(THINGS))
            else:
                prompt, answer, _ = recall_line(rng)
            lines.append(prompt + answer)
        yield "\n".join(lines)
