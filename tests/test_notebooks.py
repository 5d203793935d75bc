"""The notebooks run top to bottom on the demo cube (so they never rot); git holds them stripped."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # executes the notebooks over the demo cubes

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {
        "training_dynamics",
        "calibration_stability",
        "one_shot_vs_iterative",
        "seeds",
        "proxy_vs_truth",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, demo_dir, monkeypatch):
    monkeypatch.setenv("REDUNDANCY_CUBE", str(demo_dir / "cube.zarr"))
    monkeypatch.setenv("REDUNDANCY_SUITE_CUBE", str(demo_dir / "suite.zarr"))  # seeds.ipynb
    monkeypatch.setenv("REDUNDANCY_PROXY_CUBE", str(demo_dir / "proxy.zarr"))  # proxy_vs_truth.ipynb
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "display_data" and "image/png" in o.data for o in outputs)  # a figure
