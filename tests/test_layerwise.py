"""Layer-by-layer scoring equals full-model scoring, and its memory stays near one layer.

Equality: every family's tiny random model is saved with save_pretrained (safetensors) and scored
both ways from the same folder. Memory: a fresh Python process scores a model three times larger
than a cap and reports its peak resident set growth (VmHWM, which sees everything torch allocates
and every page of a mapped file read); the same measure on full mode must exceed the cap, so the
check is not vacuous.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from redundancy.errors import SeriesError, UnsupportedFamilyError
from redundancy.families import family_for
from redundancy.scoring import Scorer
from redundancy.scoring._layerwise import score_layerwise

from _models import CONFIGS, tiny_model

METRICS = ["importance", "importance_no_residual", "angular_distance", "relative_magnitude"]
IDS = torch.randint(0, 256, (5, 48), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and an oversubscribed machine cannot slow them down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save(model, folder, **kw):
    model.save_pretrained(folder, **kw)
    return folder


def _full(folder, dtype=torch.float32) -> np.ndarray:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    return Scorer(model, METRICS).score(IDS, batch_size=2)


@pytest.mark.parametrize("name", [*CONFIGS, "gemma2_sliding"])
def test_layerwise_equals_full(name, tmp_path):
    """Equal to full mode, or refused with the family table's reason (gpt2's learned positions, MoE's
    fused experts)."""
    model = tiny_model(name.removesuffix("_sliding"))
    if name == "gemma2_sliding":
        model.config.sliding_window = 8  # shorter than the windows: sliding layers see 8 tokens
    folder = _save(model, tmp_path / name)
    reason = family_for(model.config).layerwise
    if reason:
        with pytest.raises(UnsupportedFamilyError, match=re.escape(reason)):
            score_layerwise(folder, IDS, batch_size=2, metrics=METRICS)
        return
    got = score_layerwise(folder, IDS, batch_size=2, metrics=METRICS)  # 5 = 2 + 2 + 1: a short batch
    want = _full(folder)
    assert got.shape == want.shape == (5, 4, 3, 4)
    assert want[..., 0].std() > 0.1 * want[..., 0].mean()  # scores differ across layers: not vacuous
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_sharded_bfloat16_offloaded(tmp_path):
    folder = _save(tiny_model("olmo2"), tmp_path / "m", max_shard_size="100KB")
    assert (folder / "model.safetensors.index.json").exists()
    layers = []
    got = score_layerwise(folder, IDS, batch_size=3, dtype=torch.bfloat16, metrics=METRICS,
                          offload_activations=True, on_layer=lambda i, n: layers.append((i, n)))
    np.testing.assert_allclose(got, _full(folder, torch.bfloat16), atol=1e-4, rtol=0)
    assert layers == [(i, 4) for i in range(4)]


def test_missing_tensor_is_reported(tmp_path):
    folder = _save(tiny_model("llama"), tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    del state["model.layers.2.mlp.up_proj.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SeriesError, match="layers.2.mlp.up_proj"):
        score_layerwise(folder, IDS, batch_size=2)


def test_no_safetensors_is_reported(tmp_path):
    folder = _save(tiny_model("llama"), tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(SeriesError, match="safetensors"):
        score_layerwise(folder, IDS, batch_size=2)


_CHILD = """
import json, sys, torch
from transformers import AutoModelForCausalLM
from redundancy.scoring import Scorer
from redundancy.scoring._layerwise import score_layerwise

def status(key):  # bytes, from /proc/self/status
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

def growth(fn):  # peak resident set during fn (high-water mark reset first) minus the one before
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = status("VmRSS")
    fn()
    return status("VmHWM") - before

big, small, ids = sys.argv[1], sys.argv[2], torch.randint(0, 256, (4, 64))
full = lambda d: Scorer(AutoModelForCausalLM.from_pretrained(d).eval()).score(ids, 2)
score_layerwise(small, ids, 2), full(small)  # imports and thread pools, outside the measures
layerwise = growth(lambda: score_layerwise(big, ids, 2))
print(json.dumps(dict(layerwise=layerwise, full=growth(lambda: full(big)))))
"""


@pytest.mark.slow  # a measuring subprocess
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc")
def test_peak_memory_stays_under_a_third_of_the_model(tmp_path):
    big = _save(tiny_model("llama", layers=12, hidden=512), tmp_path / "big", max_shard_size="50MB")
    small = _save(tiny_model("llama", layers=2), tmp_path / "small")
    model_bytes = sum(f.stat().st_size for f in big.glob("*.safetensors"))  # 12 layers x 9.4 MB
    cap = model_bytes // 3
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(big), str(small)], env=env,
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    assert peak["layerwise"] < cap, (peak, cap)
    assert peak["full"] > 2 * cap, (peak, cap)  # the measure sees the full model's weights


def test_cli_layerwise_cube_equals_full_cube(local_series, tmp_path):
    """`redundancy score --layerwise` writes the same cells as the full mode, within 1e-4."""
    from typer.testing import CliRunner

    from redundancy import open_cube
    from redundancy.cli import app

    common = ["-d", "prose", "-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "3"]
    for name, extra in (("full", []), ("layerwise", ["--layerwise"])):
        args = ["score", f"local:{local_series}", "--out", str(tmp_path / name), *common, *extra]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
    full, lw = open_cube(tmp_path / "full"), open_cube(tmp_path / "layerwise")
    assert full["importance"].shape == lw["importance"].shape
    xr.testing.assert_allclose(lw["importance"], full["importance"], atol=1e-4)
    xr.testing.assert_equal(lw["fingerprint"], full["fingerprint"])
