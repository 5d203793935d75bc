"""Bad input: a one-line error, a non-zero exit, and nothing already stored is lost."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from redundancy.cli import app

runner = CliRunner()
FAST = ["--samples", "4", "--seq-len", "32", "--batch-size", "4"]


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture()
def scored(local_series, tmp_path) -> Path:
    out = tmp_path / "cube.zarr"
    code, output = run("score", f"local:{local_series}", "--out", str(out), "-d", "math", *FAST)
    assert code == 0, output
    return out


def _cells(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_missing_path(tmp_path):
    code, out = run("score", "local:/no/such/dir", "--out", str(tmp_path / "c.zarr"))
    assert code == 1 and "does not exist" in error_line(out)


def test_folder_without_config(tmp_path):
    (tmp_path / "empty" / "step-1").mkdir(parents=True)
    code, out = run("score", f"local:{tmp_path / 'empty'}", "--out", str(tmp_path / "c.zarr"))
    assert code == 1 and "no config.json" in error_line(out)


def test_unsupported_family(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM  # a causal LM the family table lacks
    OPTForCausalLM(
        OPTConfig(
            num_hidden_layers=2,
            hidden_size=32,
            ffn_dim=64,
            num_attention_heads=2,
            vocab_size=300,
            word_embed_proj_dim=32,
        )
    ).save_pretrained(tmp_path / "s" / "step-1")
    code, out = run("score", f"local:{tmp_path / 's'}", "--out", str(tmp_path / "c.zarr"), *FAST)
    line = error_line(out)
    assert code == 1 and "'opt' is not in the family table" in line and "llama" in line


def test_seq_len_above_context(local_series, tmp_path):
    code, out = run(
        "score",
        f"local:{local_series}",
        "--out",
        str(tmp_path / "c.zarr"),
        "-d",
        "math",
        "--seq-len",
        "1024",
        "--samples",
        "2",
    )
    assert code == 1 and "context of 256 tokens" in error_line(out)


def test_more_samples_than_the_set_gives(local_series, tmp_path):
    code, out = run(
        "score",
        f"local:{local_series}",
        "--out",
        str(tmp_path / "c.zarr"),
        "-d",
        "prose",
        "--samples",
        "1000000",
        "--seq-len",
        "256",
    )
    assert code == 1 and "ask for at most" in error_line(out)


def test_output_is_an_existing_file(local_series, tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("keep me")
    code, out = run("score", f"local:{local_series}", "--out", str(target), *FAST)
    assert code == 1 and "existing file" in error_line(out)
    assert target.read_text() == "keep me"


def test_unknown_dataset_suggests(local_series, tmp_path):
    code, out = run("score", f"local:{local_series}", "--out", str(tmp_path / "c.zarr"), "-d", "maths")
    assert code == 1 and "Did you mean 'math'" in error_line(out)


def test_hub_set_offline_names_builtin_sets(local_series, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = run("score", f"local:{local_series}", "--out", str(tmp_path / "c.zarr"), "-d", "c4", *FAST)
    line = error_line(out)
    assert code == 1 and "allenai/c4" in line and "code, math, prose" in line


def test_other_settings_refused_and_store_kept(local_series, scored):
    before = _cells(scored)
    code, out = run(
        "score",
        f"local:{local_series}",
        "--out",
        str(scored),
        "-d",
        "math",
        "--samples",
        "4",
        "--seq-len",
        "64",
    )
    assert code == 1 and "seq_len: 32 stored, 64 asked" in error_line(out)
    assert _cells(scored) == before


def test_failure_mid_run_keeps_finished_cells(local_series, scored, tmp_path):
    before = _cells(scored)
    code, out = run("score", f"local:{local_series}", "--out", str(scored), "-d", "math", "-d", "c4", *FAST)
    assert code == 1
    assert _cells(scored) == before  # math cells were done already; c4 failed; nothing lost


def test_rerun_skips_finished_cells(local_series, scored):
    code, out = run("score", f"local:{local_series}", "--out", str(scored), "-d", "math", *FAST)
    assert code == 0 and "0 cells written" in out and "4 already there" in out
