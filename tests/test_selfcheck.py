"""The self-check: captured streams rebuild every layer's output, in every family and dtype; a family
entry pointed at a wrong site stops scoring with one line and stores nothing."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from redundancy.cli import app
from redundancy.errors import SelfCheckError
from redundancy.families import FAMILIES, family_for
from redundancy.scoring import Scorer, score_layerwise
from redundancy.scoring._hooks import residual_hooks
from redundancy.scoring._selfcheck import layer_deviation, tolerance

from _models import CONFIGS, tiny_model

IDS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_family_passes_in_every_dtype(name, dtype):
    """The deviation is measured (not just "no error") and sits under the dtype's tolerance."""
    model = tiny_model(name).to(dtype)
    devs = []
    with (
        torch.no_grad(),
        residual_hooks(model, family_for(model.config), lambda i, s: devs.append(layer_deviation(s))),
    ):
        model(IDS)
    assert len(devs) == model.config.num_hidden_layers
    assert max(float(d) for d in devs) <= tolerance(dtype)
    Scorer(model).score(IDS, batch_size=2)  # the scorer's own check passes too


def _wrong_site(monkeypatch, model_type: str = "llama") -> None:
    """The MLP's contribution read off the post-attention norm: same width, wrong stream."""
    wrong = dataclasses.replace(FAMILIES[model_type], mlp_out="post_attention_layernorm")
    monkeypatch.setitem(FAMILIES, model_type, wrong)


def test_wrong_site_raises_naming_the_layer(monkeypatch):
    _wrong_site(monkeypatch)
    with pytest.raises(SelfCheckError, match=r"llama .*at layer 0 .*transformers \d"):
        Scorer(tiny_model("llama")).score(IDS, batch_size=2)


def test_wrong_site_of_another_width_is_a_self_check_error_too(monkeypatch):
    wrong = dataclasses.replace(FAMILIES["llama"], mlp_out="mlp.up_proj")  # (B, T, intermediate)
    monkeypatch.setitem(FAMILIES, "llama", wrong)
    with pytest.raises(SelfCheckError, match="at layer 0 .* by inf"):
        Scorer(tiny_model("llama")).score(IDS, batch_size=2)


def test_layerwise_mode_checks_too(monkeypatch, tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "m")
    _wrong_site(monkeypatch)
    with pytest.raises(SelfCheckError, match="at layer 0"):
        score_layerwise(tmp_path / "m", IDS, batch_size=2)


def _files(store) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_cli_one_line_and_store_unchanged(monkeypatch, local_series, tmp_path):
    out = tmp_path / "cube.zarr"
    fast = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]
    runner = CliRunner()
    first = runner.invoke(app, ["score", f"local:{local_series / 'step-0'}", "--out", str(out), *fast])
    assert first.exit_code == 0, first.output
    before = _files(out)
    _wrong_site(monkeypatch)
    result = runner.invoke(app, ["score", f"local:{local_series}", "--out", str(out), *fast])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert (
        len(errors) == 1 and "self-check failed for llama" in errors[0] and "Traceback" not in result.output
    )
    assert _files(out) == before
