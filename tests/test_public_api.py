"""The public API's promises (issue 23): bad input raises the toolkit's errors (errors.py), never a bare
ValueError / IndexError / KeyError / TypeError raised on purpose, and public docstrings say what they
raise ("Raises ...").

Public = the names in `redundancy.__all__`, and the functions and classes (with their methods) of
every module under redundancy/ whose path has no part starting with "_", the CLI excepted.
Run this file as a script to list the public functions whose docstring lacks "Raises".
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "redundancy"
BARE = {"ValueError", "IndexError", "KeyError", "TypeError"}
# public functions without a "Raises" sentence today; lower it as docstrings gain one, never raise it
MISSING_RAISES_AT_MOST = 30


def _public_modules() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts[1:2] == ("cli",) or any(p.startswith("_") for p in parts):
            continue
        out.append(".".join(parts))
    return out


def public_functions() -> dict[str, object]:
    """qualified name -> function, for every public function and public method of a public class."""
    import redundancy

    found: dict[str, object] = {}
    spaces = [(name, importlib.import_module(name)) for name in _public_modules()]
    for mod_name, mod in spaces:
        names = list(getattr(mod, "__all__", [])) if mod is redundancy else [
            n for n, v in vars(mod).items() if getattr(v, "__module__", None) == mod_name]
        for n in names:
            if n.startswith("_"):
                continue
            obj = getattr(mod, n)
            if inspect.isclass(obj) and obj.__module__.startswith("redundancy"):
                # a dataclass field's default (Events.log = lambda msg: None) is a value, not a method
                fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
                for m, f in vars(obj).items():
                    if m in fields:
                        continue
                    f = f.__func__ if isinstance(f, (classmethod, staticmethod)) else f
                    if not m.startswith("_") and inspect.isfunction(f):
                        found[f"{obj.__module__}.{obj.__qualname__}.{m}"] = f
            elif inspect.isfunction(obj) and obj.__module__.startswith("redundancy"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def without_raises() -> list[str]:
    return sorted(name for name, f in public_functions().items() if "Raises" not in (f.__doc__ or ""))


def test_no_bare_builtin_error_is_raised_on_purpose():
    """Every `raise ValueError(...)` (and IndexError, KeyError, TypeError) in the library is one a user
    could meet as a traceback; the toolkit's own errors print as one line. A raise caught in the same
    `try` (cube/_index.py reads an object, any failure is one StoreError) is no such raise."""
    found = []
    for path in ROOT.rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        tree = ast.parse(path.read_text())
        caught = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and any(
            h.type is None or isinstance(h.type, ast.Name) and h.type.id in ("Exception", *BARE)
            for h in t.handlers) for s in t.body for n in ast.walk(s)}
        for node in ast.walk(tree):
            bare = isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                isinstance(node.exc.func, ast.Name) and node.exc.func.id in BARE
            if bare and id(node) not in caught:
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.exc.func.id}")
    assert not found, "raise the toolkit's errors (redundancy/errors.py) instead:\n" + "\n".join(found)


def test_the_walk_finds_the_public_api():
    """The walk itself: names of `redundancy.__all__` and functions of public modules are in it, private
    modules' are not."""
    names = public_functions()
    assert "redundancy.drop._plan.DropPlan.from_order" in names  # DropPlan is in redundancy.__all__
    assert "redundancy.study.evaluate.preset_tasks" in names  # a public module's function
    assert not any(".cli." in n for n in names)


def test_public_docstrings_say_what_they_raise_no_fewer_than_before():
    missing = without_raises()
    assert len(missing) <= MISSING_RAISES_AT_MOST, (
        f"{len(missing)} public functions lack a 'Raises' sentence (at most {MISSING_RAISES_AT_MOST}): "
        "say what the new ones raise")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT.parent))
    missing = without_raises()
    print("\n".join(missing))
    print(f"{len(missing)} of {len(public_functions())} public functions lack 'Raises'", file=sys.stderr)
