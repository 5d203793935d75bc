"""Built-in offline text: the installed standard library's docstrings and source, generated maths.

Every generator is deterministic for a given Python installation (and seed, for maths).
"""
from __future__ import annotations

import ast
import functools
import os
import random
import sysconfig
from pathlib import Path
from typing import Iterator

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}


@functools.lru_cache(maxsize=1)
def stdlib_files() -> tuple[Path, ...]:
    """The standard library's .py files, sorted, without tests and third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]  # prune: never walk site-packages
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return tuple(sorted(files, key=lambda p: p.relative_to(root).as_posix()))


def stdlib_source() -> Iterator[str]:
    """One document per standard-library module: its source text."""
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) > 200:
            yield text


def stdlib_docstrings() -> Iterator[str]:
    """One document per module: its module, class and function docstrings joined as prose."""
    for text in stdlib_source():
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        docs = [ast.get_docstring(node, clean=True) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        docs = [d for d in docs if d and len(d) > 40]
        if docs:
            yield "\n\n".join(docs)


def _problem(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 12)
    kind = rng.randrange(5)
    if kind == 0:
        return f"Question: What is {a} + {b}? Answer: {a} + {b} = {a + b}."
    if kind == 1:
        big, small = max(a, b), min(a, b)
        return f"Question: What is {big} - {small}? Answer: {big} - {small} = {big - small}."
    if kind == 2:
        return (f"A train travels {a} km every hour for {c} hours. How far does it go? "
                f"It goes {a} * {c} = {a * c} km.")
    if kind == 3:
        return (f"Solve for x: {c}x + {a} = {c * b + a}. Subtract {a}: {c}x = {c * b}. "
                f"Divide by {c}: x = {b}.")
    return (f"Sam has {a} apples and gives away {min(a, c)}. Then Sam buys {b} more. "
            f"Sam now has {a} - {min(a, c)} + {b} = {a - min(a, c) + b} apples.")


def math_problems(seed: int = 0) -> Iterator[str]:
    """An endless stream of documents, each eight generated arithmetic and algebra problems."""
    rng = random.Random(seed)
    while True:
        yield "\n".join(_problem(rng) for _ in range(8))
