"""Megatron-LM checkpoints -> Hugging Face Llama, checked against checkpoints written by the real
Megatron library and its own logits (tests/data/megatron/, written by tests/make_megatron_fixtures.py:
megatron-core 0.16.1 with Megatron-LM core_v0.16.1's megatron/training, on CPU with gloo; its docstring
names the upstream files, the shims and the Transformer Engine key layout it derives by renaming).
No megatron is installed here: everything is read with the restricted unpickler.

Fixtures (hidden 128, 4 heads, 2 layers, SwiGLU ffn 64, vocab 128, RMSNorm, RoPE, fp32):
- tp1_mha_torch: TP1, multi-head attention without --group-query-attention (args: num_query_groups=1);
- tp2_gqa2_torch: TP2, --group-query-attention --num-query-groups 2;
- pp2_gqa2_te2_torch: pipeline parallel 2 (mp_rank_00_000, mp_rank_00_001), TE key layout with
  `_extra_state` as a TE 2.x uint8 tensor;
- tp2_mha_te1_mapneo: TE key layout, `_extra_state` as TE 1.x BytesIO, MAP-Neo era args (norm_epsilon,
  no exit_signal nor attention_backend);
- tp2_gqa2_dist: --ckpt-format torch_dist, two iterations (5 and 10).
Every one of them holds Megatron Core 0.16's args unless MAP-Neo's: exit_signal (signal.SIGTERM),
attention_backend (a megatron enum), torch.dtype fields, layernorm_epsilon.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from redundancy import convert_megatron
from redundancy.cli import app
from redundancy.errors import OutputError, SeriesError
from redundancy.sources._megatron import load_ranks, read_megatron
from redundancy.sources._safe_pickle import StandIn, safe_load

from _support import shared_tokenizer

DATA = Path(__file__).parent / "data" / "megatron"
FIXTURES = ["tp1_mha_torch", "tp2_gqa2_torch", "pp2_gqa2_te2_torch", "tp2_mha_te1_mapneo", "tp2_gqa2_dist"]
SEQ = 32  # --seq-length of every fixture
SAMPLES = {5: 24, 10: 56}  # consumed_train_samples the generator stored per iteration
BAR = 1e-4


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    """A character tokenizer whose ids fit the fixtures' 128-row embedding (printable ASCII, else <unk>)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{chr(c): c - 29 for c in range(32, 127)}}  # ids < 98
    inner = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    folder = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(folder)
    return folder


def _iters(name: str) -> list[Path]:
    return sorted((DATA / name).glob("iter_*"))


def _reference(folder: Path) -> dict:
    return torch.load(folder.parent / f"logits_{folder.name[len('iter_'):]}.pt", weights_only=True)


def _gap(hf: Path, ref: dict) -> tuple[float, bool]:
    """(max |logits - Megatron's|, argmax equal) of the converted folder on Megatron's tokens."""
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ref["tokens"]).logits
    same = torch.equal(logits.argmax(-1), ref["logits"].argmax(-1))
    return (logits - ref["logits"]).abs().max().item(), same


def test_megatron_is_not_importable():
    assert importlib.util.find_spec("megatron") is None  # the stand-ins are really needed


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_converts_to_megatrons_own_logits(name, tok, tmp_path):
    for folder in _iters(name):
        out = convert_megatron(folder, tokenizer=tok, out=tmp_path / folder.name)
        gap, same_argmax = _gap(out, _reference(folder))
        assert gap < BAR and same_argmax, (name, folder.name, gap)
        step = int(folder.name[len("iter_"):])
        config = json.loads((out / "config.json").read_text())
        kv = 4 if "mha" in name else 2  # without --group-query-attention every head has its keys
        assert (config["rms_norm_eps"], config["num_key_value_heads"]) == (1e-6, kv)  # --norm-epsilon 1e-6
        meta = json.loads((out / "checkpoint.json").read_text())
        assert meta == {"step": step, "tokens": SAMPLES[step] * SEQ}  # consumed_train_samples x seq_length


def test_current_args_load_with_stand_ins():
    """Megatron Core 0.16's args: a signal, a megatron enum, dtypes, layernorm_epsilon; MHA as 1 group."""
    a = load_ranks(_iters("tp1_mha_torch")[0])[0]["args"]
    assert a.exit_signal.name == "SIGTERM"
    assert isinstance(a.attention_backend, StandIn)
    assert type(a.attention_backend).__qualname__ == "megatron.core.transformer.enums.AttnBackend"
    assert a.params_dtype is torch.float32
    assert (a.num_query_groups, a.group_query_attention, a.layernorm_epsilon) == (1, False, 1e-6)
    assert not hasattr(a, "norm_epsilon")
    state, args, _ = read_megatron(_iters("tp1_mha_torch")[0])
    assert state["model.layers.0.self_attn.k_proj.weight"].shape == (128, 128)  # 4 heads of keys, not 1


def _negative(name: str, tmp_path: Path, swap) -> Path:
    """A copy of the fixture's last iteration with `swap(model)` applied to every rank's weights (the
    args' megatron stand-ins saved as their values: megatron is not here to pickle them)."""
    src = _iters(name)[-1]
    dst = tmp_path / "neg" / src.name
    shutil.copytree(src, dst)
    for f in dst.glob("mp_rank_*/model_optim_rng.pt"):
        ckpt = safe_load(f)
        swap(ckpt["model"], ckpt["args"])
        ckpt["args"] = argparse.Namespace(**{k: v.value if isinstance(v, StandIn) else v
                                             for k, v in vars(ckpt["args"]).items()})
        torch.save(ckpt, f)
    return dst


def _swap_gate_up(model, a):
    for k in [k for k in model if k.endswith("linear_fc1.weight")]:
        gate, up = model[k].chunk(2)
        model[k] = torch.cat([up, gate])


def _swap_k_v(model, a):
    groups = a.num_query_groups if a.group_query_attention else a.num_attention_heads
    q_per, hd = a.num_attention_heads // groups, a.hidden_size // a.num_attention_heads
    for k in [k for k in model if k.endswith("linear_qkv.weight")]:
        t = model[k].view(-1, q_per + 2, hd, a.hidden_size).clone()
        t[:, [q_per, q_per + 1]] = t[:, [q_per + 1, q_per]]
        model[k] = t.view(-1, a.hidden_size)


def _swap_norms(model, a):
    for k in [k for k in model if k.endswith(("input_layernorm.weight", "linear_qkv.layer_norm_weight"))]:
        other = k.replace("input_layernorm", "pre_mlp_layernorm").replace(
            "self_attention.linear_qkv.layer_norm_weight", "mlp.linear_fc1.layer_norm_weight")
        model[k], model[other] = model[other], model[k]


@pytest.mark.parametrize("swap", [_swap_gate_up, _swap_k_v, _swap_norms])
@pytest.mark.parametrize("name", ["tp2_gqa2_torch", "tp2_mha_te1_mapneo"])
def test_negative_controls_fail_the_bar(name, swap, tok, tmp_path):
    """The bar is sharp: each swap, made in the Megatron files, moves the logits past it."""
    folder = _negative(name, tmp_path, swap)
    out = convert_megatron(folder, tokenizer=tok, out=tmp_path / "hf")
    gap, same_argmax = _gap(out, _reference(_iters(name)[-1]))
    assert gap > BAR, gap
    assert gap > 100 * BAR or not same_argmax


def test_convert_command_on_each_fixture(tok, tmp_path):
    runner = CliRunner()
    for name in FIXTURES:
        folder = _iters(name)[-1]
        r = runner.invoke(app, ["convert", str(folder), "--tokenizer", str(tok), "--out",
                                str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert f"step 10, {56 * SEQ} tokens seen" in r.output
        assert json.loads((tmp_path / name / "checkpoint.json").read_text())["step"] == 10


def test_convert_refuses_an_out_on_or_inside_its_input(tok, tmp_path):
    folder = tmp_path / "iter_0000010"
    shutil.copytree(_iters("tp1_mha_torch")[-1], folder)
    for out in (folder, folder / "hf"):
        with pytest.raises(OutputError, match="the input"):
            convert_megatron(folder, tokenizer=tok, out=out)
    assert sorted(p.name for p in folder.iterdir()) == ["mp_rank_00"]
    r = CliRunner().invoke(app, ["convert", str(folder), "--tokenizer", str(tok), "--out", str(folder / "x")])
    assert r.exit_code == 1 and "the input" in r.output and "Traceback" not in r.output


def test_convert_refuses_a_folder_that_is_not_megatron(tok, tmp_path):
    with pytest.raises(SeriesError, match="not a Megatron-LM checkpoint"):
        convert_megatron(tmp_path, tokenizer=tok, out=tmp_path.parent / "hf-none")


def test_score_local_folder_of_iterations(tok, tmp_path, monkeypatch):
    """`score local:DIR` on Megatron iter_N/ folders: converted once into the cache, steps and tokens from
    the args; a second run converts nothing (the cache is kept) and skips the finished cells."""
    import redundancy as rd

    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "cache"))
    history = tmp_path / "run"
    shutil.copytree(DATA / "tp2_gqa2_dist", history, ignore=shutil.ignore_patterns("logits_*"))
    args = ["score", f"local:{history}", "--tokenizer", str(tok), "--out", str(tmp_path / "cube.zarr"),
            "-d", "math", "--samples", "2", "--seq-len", "16", "--batch-size", "2", "--dtype", "float32"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    cube = rd.open_cube(tmp_path / "cube.zarr")
    assert cube.step.values.tolist() == [5, 10]
    assert cube.tokens.values.ravel().tolist() == [24 * SEQ, 56 * SEQ]
    assert int(cube.importance.notnull().sum()) > 0
    converted = sorted(p.name for p in (tmp_path / "cache" / "converted" / "local").glob("*/iter_*"))
    assert converted == ["iter_0000005", "iter_0000010"]
    r = CliRunner().invoke(app, args)  # again: nothing converted anew, every cell already there
    assert r.exit_code == 0 and "0 cells written" in r.output, r.output
    again = sorted(p.name for p in (tmp_path / "cache" / "converted" / "local").glob("*/iter_*"))
    assert again == converted


def test_local_megatron_without_tokenizer_says_what_to_pass(tmp_path, monkeypatch):
    from redundancy.sources import open_series

    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SeriesError, match="--tokenizer"):
        open_series(f"local:{DATA / 'tp1_mha_torch'}")


def test_hub_crawl_of_a_torch_dist_history(tok, tmp_path, monkeypatch):
    """MAP-Neo's layout on the hub (iter_N/ folders of one branch), written as torch_dist."""
    import redundancy as rd

    from _fakehub import FakeHub

    monkeypatch.setenv("REDUNDANCY_CACHE", str(tmp_path / "rcache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = tmp_path / "hub" / "m-a-p" / "neo_dist" / "main"
    shutil.copytree(DATA / "tp2_gqa2_dist", repo, ignore=shutil.ignore_patterns("logits_*", "fixture.json",
                                                                                 "*.txt"))
    with FakeHub(tmp_path / "hub") as hub:
        r = CliRunner().invoke(app, ["crawl", "m-a-p/neo_dist", "--preset", "map-neo", "--endpoint",
                                     hub.endpoint, "--tokenizer", str(tok), "--out",
                                     str(tmp_path / "neo.zarr"),
                                     "-d", "math", "--samples", "2", "--seq-len", "16", "--batch-size", "2",
                                     "--dtype", "float32"])
        assert r.exit_code == 0, r.output
    cube = rd.open_cube(tmp_path / "neo.zarr")
    assert cube.step.values.tolist() == [5, 10]
    assert cube.tokens.values.ravel().tolist() == [24 * SEQ, 56 * SEQ]
    assert int(cube.importance.notnull().sum()) > 0


def test_legacy_layout_round_trip(tok, tmp_path):
    """The legacy GPT model's keys (megatron/model, before Megatron Core), TP2: written by our hand
    writer (tests/_megatron_writer.py cites Megatron's files; the real library's legacy model was not
    run here), converted back to the model it was cut from."""
    from _megatron_writer import write_megatron
    from _models import tiny_model

    model = tiny_model("llama", vocab=512)  # GQA: 4 heads, 2 kv groups
    write_megatron(model, tmp_path / "iter_0000010", tp=2, iteration=10, global_batch=4, layout="legacy")
    tok512 = tmp_path / "tok"
    shared_tokenizer().save_pretrained(tok512)
    out = convert_megatron(tmp_path / "iter_0000010", tokenizer=tok512, out=tmp_path / "hf")
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)
    assert json.loads((out / "checkpoint.json").read_text()) == {"step": 10, "tokens": 10 * 4 * 256}


# ---- refused unread: nothing a crafted file names is imported or run ------------------------------

_EVIL = """
import os, sys, types, pickle, torch
marker = sys.argv[1]
class Exploit:
    def __reduce__(self):
        return os.system, (f"touch {marker}",)
torch.save({"args": None, "iteration": 1, "model": {"x": Exploit()}}, sys.argv[2])
# a megatron.* module that would print and write on import: named by a second file
pkg = os.path.join(sys.argv[3], "megatron_evil")
os.makedirs(pkg, exist_ok=True)
open(os.path.join(pkg, "__init__.py"), "w").write(f"print('IMPORTED'); open({marker!r} + '.imported', 'w')\\n"
                                                   "class Thing:\\n    pass\\n")
sys.path.insert(0, sys.argv[3])
import megatron_evil
megatron_evil.Thing.__module__ = "megatron_evil"
torch.save({"args": None, "iteration": 1, "model": {"x": megatron_evil.Thing()}}, sys.argv[4])
"""


def test_a_pickle_that_runs_code_is_refused_unread(tmp_path):
    marker, evil, other = tmp_path / "pwned", tmp_path / "evil.pt", tmp_path / "other.pt"
    subprocess.run([sys.executable, "-c", _EVIL, str(marker), str(evil), str(tmp_path / "mods"), str(other)],
                   check=True, capture_output=True)
    os.remove(tmp_path / "pwned.imported")  # the writer imported it; the reader must not
    with pytest.raises(SeriesError, match=r"asks to unpickle posix\.system.*refused unread"):
        safe_load(evil)
    with pytest.raises(SeriesError, match=r"asks to unpickle megatron_evil\.Thing"):
        safe_load(other)
    assert not marker.exists() and not (tmp_path / "pwned.imported").exists()
    assert "megatron_evil" not in sys.modules


def test_a_megatron_name_is_a_stand_in_never_imported(tmp_path, capsys):
    """A `megatron.*` module that prints on import: the file loads, the module is never imported."""
    mods = tmp_path / "mods" / "megatron" / "core"
    mods.mkdir(parents=True)
    (mods / "loud.py").write_text("print('IMPORTED megatron.core.loud')\nimport enum\n"
                                  "class Mode(enum.Enum):\n    on = 3\n")
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import megatron.core.loud as m; "
              "torch.save({'mode': m.Mode.on, 't': torch.ones(2)}, sys.argv[2])")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "mods"), str(tmp_path / "f.pt")], check=True,
                   capture_output=True)
    loaded = safe_load(tmp_path / "f.pt")
    assert isinstance(loaded["mode"], StandIn) and loaded["mode"].value == 3
    assert "megatron.core.loud" not in sys.modules and "IMPORTED" not in capsys.readouterr().out


def test_a_crafted_torch_dist_metadata_is_refused_unread(tok, tmp_path):
    """torch.distributed.checkpoint reads `.metadata` with a plain pickle.load; ours does not run it."""
    import pickle

    folder = tmp_path / "iter_0000010"
    shutil.copytree(_iters("tp2_gqa2_dist")[-1], folder)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (folder / ".metadata").write_bytes(pickle.dumps({"state_dict_metadata": Exploit()}, protocol=4))
    with pytest.raises(SeriesError, match=r"asks to unpickle posix\.system.*refused unread"):
        convert_megatron(folder, tokenizer=tok, out=tmp_path / "hf")
    assert not marker.exists() and not (tmp_path / "hf").exists()


def test_empty_bytes_in_a_protocol_2_pickle_load(tmp_path):
    """torch.save's protocol 2 writes b"" as builtins.bytes(): allowed, not refused."""
    torch.save({"empty": b"", "some": b"xy"}, tmp_path / "b.pt")
    assert safe_load(tmp_path / "b.pt") == {"empty": b"", "some": b"xy"}


def test_unmapped_weights_are_refused(tok, tmp_path):
    """A bias would be lost in a Llama: refused, not silently dropped."""
    def add_bias(model, a):
        model["decoder.layers.0.self_attention.linear_qkv.bias"] = torch.zeros(3)

    folder = _negative("tp1_mha_torch", tmp_path, add_bias)
    with pytest.raises(SeriesError, match="linear_qkv.bias"):
        convert_megatron(folder, tokenizer=tok, out=tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
