"""Every bad input a user met, through the CLI: one line on stderr, no traceback, a non-zero exit, and the
stores and inputs byte-identical afterwards. The CLI runs in this process (typer's runner, stderr apart;
an exception escaping the command fails the test as a traceback would), the full and read-only disks
through the installed script in a subprocess (tests/test_values_refused.py runs usage errors so too)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _models import tiny_model
from _support import cli_here, make_tokenizer

pytestmark = pytest.mark.slow  # every bad input runs the CLI; scores, loads checkpoints

FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]


def _files(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


cli = cli_here  # the CLI in this process


def cli_process(*args) -> subprocess.CompletedProcess:
    """`redundancy ARGS` as the installed script runs it: a subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "redundancy.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def one_line(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr


@pytest.fixture(scope="module")
def lab(tmp_path_factory, local_series) -> Path:
    """A scored cube, and one broken checkpoint folder per fault."""
    root = tmp_path_factory.mktemp("lab")
    r = cli("score", f"local:{local_series / 'step-10'}", "--out", root / "cube.zarr", *FAST)
    assert r.returncode == 0, r.stderr
    good = local_series / "step-10"
    for name in ("truncated", "notjson", "notype", "notok", "morelayers", "fewerlayers", "othermodel"):
        shutil.copytree(good, root / name / "step-10")
    st = root / "truncated/step-10/model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    (root / "notjson/step-10/config.json").write_text("{not json")
    cfg = json.loads((good / "config.json").read_text())
    (root / "notype/step-10/config.json").write_text(
        json.dumps({k: v for k, v in cfg.items() if k != "model_type"})
    )
    for f in (root / "notok/step-10").glob("tokenizer*"):
        f.unlink()
    (root / "morelayers/step-10/config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 6}))
    (root / "fewerlayers/step-10/config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    tiny_model("llama", seed=99, vocab=512).save_pretrained(root / "othermodel/step-10")
    big_tok = root / "bigvocab/step-10"  # ids up to 299 for an embedding of 256 rows
    tiny_model("llama", vocab=256).save_pretrained(big_tok)
    make_tokenizer(300).save_pretrained(big_tok)
    return root


@pytest.mark.parametrize(
    "case,needle",
    [
        ("truncated", "cannot load step 10"),
        ("notjson", "cannot load step 10"),
        ("notype", "cannot load step 10"),
        ("notok", "cannot load the tokenizer"),
        ("morelayers", "18 missing"),
        ("fewerlayers", "9 unexpected"),
        ("bigvocab", "embedding has 256 rows"),
    ],
)
def test_broken_checkpoints(lab, case, needle):
    before = _files(lab / "cube.zarr", lab / case)
    one_line(cli("score", f"local:{lab / case}", "--out", lab / "cube.zarr", *FAST), needle)
    assert _files(lab / "cube.zarr", lab / case) == before


def test_another_model_under_the_same_name_is_refused(lab):
    """The store holds `step-10` scored from other weights: refused, not skipped as done."""
    before = _files(lab / "cube.zarr")
    one_line(
        cli("score", f"local:{lab / 'othermodel/step-10'}", "--out", lab / "cube.zarr", *FAST),
        "another model under the same name",
    )
    assert _files(lab / "cube.zarr") == before


@pytest.mark.parametrize(
    "args,needle",
    [
        (["score", "{good}", "--out", "{cube}", "--device", "cuda", *FAST], "no CUDA GPU"),
        (["score", "{good}", "--out", "{cube}", "--samples", "0"], "--samples"),
        (
            [
                "drop",
                "{ckpt}",
                "--kind",
                "attn",
                "--k",
                "-3",
                "--store",
                "{cube}",
                "--dataset",
                "math",
                "--out",
                "{tmp}/d",
            ],
            "at least 1",
        ),
        (["drop", "{ckpt}", "--block", "0,1,2,3", "--out", "{tmp}/d"], "drops all 4 layers"),
        (["quantize", "{ckpt}", "--group-size", "0", "--out", "{tmp}/q"], "--group-size 0"),
        (["quantize", "{ckpt}", "--out", "{ckpt}"], "is the input"),
        (["drop", "{ckpt}", "--attn", "1", "--out", "{ckpt}"], "is the input"),
        (
            [
                "study",
                "{ckpt}",
                "--store",
                "{cube}",
                "--dataset",
                "math",
                "--k",
                "attn=99",
                "--quant",
                "awq",
                "--prompt",
                "8",
                "--new",
                "8",
                "--out",
                "{tmp}/s",
            ],
            "attn order has only 4 entries",
        ),
        (["study", "{ckpt}", "--store", "{cube}", "--k", "attn=-3", "--out", "{tmp}/s"], "at least 1"),
        (
            [
                "study",
                "{ckpt}",
                "--store",
                "{cube}",
                "--dataset",
                "math",
                "--order-metric",
                "loss_delta",
                "--prompt",
                "8",
                "--new",
                "8",
                "--out",
                "{tmp}/s",
            ],
            "holds no loss_delta; score it with --metric loss_delta",
        ),
        (["evaluate", "{ckpt}", "--preset", "", "--task", "hellaswagg"], "did you mean hellaswag"),
    ],
)
def test_bad_options(lab, local_series, tmp_path, args, needle):
    fill = dict(
        good=f"local:{local_series / 'step-10'}",
        cube=lab / "cube.zarr",
        ckpt=local_series / "step-10",
        tmp=tmp_path,
    )
    before = _files(lab / "cube.zarr", local_series / "step-10")
    one_line(cli(*[a.format(**fill) for a in args]), needle)
    assert _files(lab / "cube.zarr", local_series / "step-10") == before
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.fixture()
def tiny_fs(tmp_path):
    """A 64 KiB file system and a read-only one (tmpfs; needs the mount permission root has here)."""
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir(), ro.mkdir()
    mounted = []
    for where, opts in ((full, "size=64k"), (ro, "ro,size=64k")):
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True
        ).returncode:
            pytest.skip("cannot mount a tmpfs here (not root?): the full / read-only disk cases need one")
        mounted.append(where)
    yield full, ro
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


def test_full_and_read_only_disks(local_series, tiny_fs):
    full, ro = tiny_fs
    one_line(cli_process("drop", local_series / "step-10", "--attn", "1", "--out", full / "d"),
             "disk is full")
    assert not [p for p in full.iterdir()]  # the temporary folder was removed
    one_line(cli_process("score", f"local:{local_series / 'step-10'}", "--out", ro / "c.zarr", *FAST),
             "read-only")


def test_two_processes_create_one_fresh_store(tmp_path):
    """Both open the same 20 fresh stores at once: each open succeeds (no ContainsGroupError)."""
    code = (
        "import sys\nfrom redundancy.cube import CubeStore\n"
        "settings = dict(n_samples=4, seq_len=32, seed=0, "
        f"pool_factor=4, packing='eos-joined')\nfor i in range(20):\n"
        f"    CubeStore.open('{tmp_path}/c%d.zarr' % i, settings)\nprint('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 and o.strip() == "ok" for p, (o, _) in zip(procs, outs)), outs
    assert len(list(tmp_path.glob("c*.zarr/zarr.json"))) == 20 and not list(tmp_path.glob(".c*"))
