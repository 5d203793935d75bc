"""The layout's promises (docs/architecture.md): the library never imports `analyses` outside the CLI,
no import cycle between its modules, and the command line starts without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "redundancy"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at import time (module level, not inside functions), resolved to names."""
    tree, name = ast.parse(path.read_text()), _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    """module -> the package modules it imports at import time; a module's own parent packages are
    left out (Python imports them first, whatever the module says)."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    return {m: {i for i in _top_level_imports(p) if i in files and i != m and not m.startswith(i + ".")}
            for m, p in files.items()}


def test_only_the_cli_imports_analyses():
    for path in ROOT.rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        text = path.read_text()
        assert "import analyses" not in text and "from analyses" not in text, path


def test_no_import_cycle():
    graph, state, stack = _graph(), {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            assert state.get(n) != "open", " -> ".join(stack[stack.index(n):] + [n])
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.slow  # a fresh interpreter subprocess
def test_the_cli_and_package_import_without_torch():
    code = ("import sys, redundancy, redundancy.cli; "
            "print(sorted(m for m in ('torch', 'xarray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
