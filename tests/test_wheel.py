"""Installs anywhere: a wheel built from the sources carries the shipped inputs (redundancy/data/) and,
installed outside the repository, finds its calibration sets, presets, suites, recipe and lm-eval
tasks through importlib.resources."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout stays clean), installed with
    --target into a folder far from the repository."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in ("redundancy", "analyses"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
                   check=True, capture_output=True)
    wheel = next((root / "dist").glob("redundancy-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)], check=True,
                   capture_output=True)
    return root


def test_the_wheel_holds_every_shipped_input(installed):
    names = set(zipfile.ZipFile(next((installed / "dist").glob("*.whl"))).namelist())
    shipped = {f"redundancy/{p.relative_to(REPO / 'redundancy').as_posix()}"
               for p in (REPO / "redundancy" / "data").rglob("*") if p.is_file()}
    assert len(shipped) == 10 and shipped <= names, shipped - names  # run_presets.yaml the 10th
    assert "analyses/__init__.py" in names


def _run(installed: Path, *args: str) -> subprocess.CompletedProcess:
    """Python with only the installed wheel on its path, from a folder outside the repository."""
    env = {**os.environ, "PYTHONPATH": str(installed / "site"), "PYTHONSAFEPATH": "1"}
    return subprocess.run([sys.executable, *args], cwd=installed, env=env, capture_output=True, text=True)


def test_installed_package_reads_its_data_outside_the_repository(installed):
    code = ("import redundancy, redundancy._data as d; from redundancy.study.evaluate import _local_config; "
            "from redundancy.sources._tiny import default_recipe; "
            "print(redundancy.__file__); print(d.DATA_DIR); "
            "print(_local_config('builtin_facts')['dataset_kwargs']['data_files']['test']); "
            "print(default_recipe()['model']['num_hidden_layers'])")
    r = _run(installed, "-c", code)
    assert r.returncode == 0, r.stderr
    module, data, facts, layers = r.stdout.split()
    site = str(installed / "site")
    assert module.startswith(site) and data.startswith(site) and facts.startswith(site), r.stdout
    assert Path(facts).read_text().count("\n") == 256 and layers == "8"


def test_installed_cli_lists_sets_and_presets(installed):
    r = _run(installed, "-m", "redundancy.cli", "datasets")
    assert r.returncode == 0 and "wikitext2" in r.stdout and "prose" in r.stdout, r.stderr
    # the preset is read before any network call
    r = _run(installed, "-m", "redundancy.cli", "list", "org/none", "--preset", "pythai")
    assert r.returncode == 1 and "Did you mean 'pythia'? Known: amber, bloom" in r.stderr, r.stderr
