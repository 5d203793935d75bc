"""The layout's promises (docs/architecture.md): the library never imports `analyses` outside the CLI,
the command line starts without torch, and the CLI holds commands, option declarations and printing
only. (No import cycle, lazy imports included: tests/test_imports.py.)"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "redundancy"


def test_only_the_cli_imports_analyses():
    for path in ROOT.rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        text = path.read_text()
        assert "import analyses" not in text and "from analyses" not in text, path


@pytest.mark.slow  # a fresh interpreter subprocess
def test_the_cli_and_package_import_without_torch():
    code = ("import sys, redundancy, redundancy.cli; "
            "print(sorted(m for m in ('torch', 'xarray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the CLI holds commands, option declarations and printing only (issue 23) ----------------------

CLI = ROOT / "cli"
# What a CLI module may define besides its commands: option declarations and their checks
# (_options.py), the app itself (_app.py), and, by name, presentation: progress bars, printing,
# figures drawn by joining analyses (the library never imports it). Every other decision is a
# library function the command calls: a new helper here must say why it is presentation.
PRESENTATION = {
    "__init__.py": {"main"},
    "_console.py": {"bars", "print_table"},
    "_table.py": {"cells", "_speedup", "_fmt", "rich_table", "markdown"},
    "_scoring.py": {"score_command", "order_command", "_report"},  # progress bars around score/order_history
    "_study.py": {"study_command", "curves", "table_command", "_warn", "_only"},  # prints, draws (analyses)
    "demo.py": {"_demo_cube", "_demo_study", "_demo_suite", "_demo_proxy"},  # the demo's steps and figures
    "figures.py": {"open_for_figures", "figures_out"},  # analyses joined to a cube
    "info.py": {"flag_text", "listing", "flag_report", "_check_results"},  # `list` and `check` output
    "score.py": {"_scorer", "_S"},  # the score/crawl command factory; ScoreSettings' options
    "study.py": {"_T", "_ints"},  # StudySettings' options; --attn 3,5 parsed
}
# decisions the CLI made before issue 23, now library functions (redundancy.orders.order_from_cube,
# study.heldout_from_cube, sources.read_step, ScoreSettings, settings.Selection)
MOVED = {"stored_order", "heldout_from_cube", "checkpoint_step", "make_settings", "hub_args"}


def _is_command(node: ast.FunctionDef) -> bool:
    return any("command" in ast.unparse(d) or "callback" in ast.unparse(d) for d in node.decorator_list)


def test_the_cli_defines_commands_options_and_printing_only():
    extra = {}
    for path in sorted(CLI.glob("*.py")):
        if path.name in ("_options.py", "_app.py", "__main__.py"):
            continue
        defined = {n.name for n in ast.parse(path.read_text()).body
                   if isinstance(n, ast.FunctionDef) and not _is_command(n)}
        assert not defined & MOVED, (path.name, defined & MOVED)
        if unexpected := defined - PRESENTATION.get(path.name, set()):
            extra[path.name] = sorted(unexpected)
    assert not extra, f"functions a library module should own (or PRESENTATION, saying why): {extra}"


def _settings_flags() -> dict[str, str]:
    """Every command-line flag a settings field declares -> the field (class.name)."""
    import dataclasses

    from redundancy.settings import HubAccess, ScoreSettings, Selection
    from redundancy.study.settings import StudySettings

    out = {}
    for cls in (ScoreSettings, Selection, HubAccess, StudySettings):
        for f in dataclasses.fields(cls):
            if opt := f.metadata.get("option"):
                out |= {part: f"{cls.__name__}.{f.name}" for flag in opt.flags for part in flag.split("/")}
    return out


# the same flag with another meaning, not another default: `order --step` picks the steps to order
# (a selection's --step picks the checkpoints listed); `drop --dataset` names the set whose stored
# order a plan comes from (no default: it is asked with --kind only); `heatmap/figures --metric` is
# the one stored variable drawn; `convert --tokenizer` is required there (no default to repeat)
OTHER_MEANING = {("score.py", "--step"), ("study.py", "--dataset"), ("figures.py", "--metric"),
                 ("convert.py", "--tokenizer")}


def test_each_settings_option_is_declared_once():
    """A flag that a settings field declares (redundancy/settings.py, study/settings.py) reaches the
    command line only through `_options.setting`, with the field's default, help and check: no
    typer.Option in the CLI declares it again (by name, or by a parameter of the same name)."""
    flags, again = _settings_flags(), []
    for path in sorted(CLI.glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            params = fn.args.args + fn.args.kwonlyargs
            given = (fn.args.defaults + fn.args.kw_defaults)[::-1]
            defaults = dict(zip([a.arg for a in params][::-1], given))
            for name, default in defaults.items():
                if not (isinstance(default, ast.Call) and ast.unparse(default.func) == "typer.Option"):
                    continue
                named = [a.value for a in default.args if isinstance(a, ast.Constant) and
                         isinstance(a.value, str) and a.value.startswith("-")]
                for flag in named or ["--" + name.replace("_", "-")]:
                    if flag in flags and (path.name, flag) not in OTHER_MEANING:
                        again.append((path.name, fn.name, flag, flags[flag]))
    assert not again, f"options declared again instead of through _options.setting: {again}"
