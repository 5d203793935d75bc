"""The import graph among `redundancy.*` modules has no cycle, lazy imports included (issue 23's bar),
and the drop stage does not import the sources stage.

test_layout.py checks module-level imports only; an import inside a function closes a loop as surely
when that function runs, so here every `import` statement anywhere in a file counts. Importing
`a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`: those packages are edges too, except the
importer's own parent packages (Python has imported them before the importer's first line).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "redundancy"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _named(path: Path, modules: set[str]) -> set[str]:
    """Every `redundancy.*` module an import statement in `path` names, at any depth of the file."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    return {m for m in out if m in modules}


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """module -> the modules that importing it, or running any of its functions, may import."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for m, path in files.items():
        own = set(_ancestors(m))
        edges = set()
        for target in _named(path, set(files)):
            edges |= {target, *(a for a in _ancestors(target) if a in files)}
        graph[m] = {t for t in edges if t != m and t not in own}
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in graph[todo.pop()] - seen:
            seen.add(n)
            todo.append(n)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each set of modules that reach each other through imports (more than one module), sorted."""
    reach = {m: _reach(graph, m) for m in graph}
    found = {tuple(sorted({m} | {n for n in reach[m] if m in reach[n]})) for m in graph if m in reach[m]}
    return sorted(list(c) for c in found)


def test_the_walk_sees_lazy_and_package_imports():
    """The walk itself, on imports whose edges are known by reading the files: drop/_materialize.py
    imports the strict loader inside a function; every module of a package reaches its parent
    package's siblings only through the names it imports."""
    graph = import_graph()
    assert "redundancy._load" in graph["redundancy.drop._materialize"]  # inside load_dropped / materialize
    assert "redundancy.drop" not in graph["redundancy.drop._plan"]  # its own package: not an edge


def test_no_import_cycle_lazy_imports_included():
    found = cycles(import_graph())
    assert not found, "import cycles (each a set of modules that import each other):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_drop_does_not_import_sources():
    graph = import_graph()
    leaks = {m: sorted(t for t in ts if t.startswith("redundancy.sources"))
             for m, ts in graph.items() if m.startswith("redundancy.drop")}
    assert not any(leaks.values()), leaks
