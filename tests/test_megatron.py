"""MAP-Neo's raw Megatron-LM checkpoints: 2 tensor-parallel ranks merged into a HF Llama, both layouts,
read without running pickled code. The writer (tests/_megatron_writer.py) follows Megatron's own
checkpointing.py and loader_megatron_core.py; see its docstring for the files and lines."""
from __future__ import annotations

import enum
import importlib.util
import json
import os
import sys
import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from redundancy.errors import SeriesError
from redundancy.sources._megatron import convert_megatron, load_ranks
from redundancy.sources._safe_pickle import StandIn

from _megatron_writer import write_megatron
from _models import tiny_model
from _support import make_tokenizer


def test_megatron_is_not_importable():
    assert importlib.util.find_spec("megatron") is None  # the stand-ins below are really needed


@pytest.mark.parametrize("layout", ["legacy", "core"])
def test_round_trip_gives_identical_logits(tmp_path, layout):
    model = tiny_model("llama", vocab=512)  # GQA: 4 heads, 2 kv groups
    write_megatron(model, tmp_path / "iter_0000010", tp=2, iteration=10, global_batch=4, layout=layout)
    make_tokenizer().save_pretrained(tmp_path / "tok")
    out = convert_megatron(tmp_path / "iter_0000010", str(tmp_path / "tok"), tmp_path / "hf")
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta == {"step": 10, "tokens": 10 * 4 * 256}  # no consumed_train_samples: iteration x batch x seq


def test_tokens_from_consumed_samples(tmp_path):
    """A batch-size ramp: 10 iterations consumed 25 samples, not 10 x 4."""
    write_megatron(tiny_model("llama", vocab=512), tmp_path / "it", iteration=10, global_batch=4,
                   layout="core", consumed_samples=25)
    make_tokenizer().save_pretrained(tmp_path / "tok")
    out = convert_megatron(tmp_path / "it", str(tmp_path / "tok"), tmp_path / "hf")
    assert json.loads((out / "checkpoint.json").read_text())["tokens"] == 25 * 256


def _fake_megatron_enum():
    """megatron.core.enums.ModelType, defined here as Megatron defines it (an enum.Enum)."""
    mods = {name: types.ModuleType(name) for name in ("megatron", "megatron.core", "megatron.core.enums")}

    class ModelType(enum.Enum):
        encoder_or_decoder = 1
        encoder_and_decoder = 2

    ModelType.__module__, ModelType.__qualname__ = "megatron.core.enums", "ModelType"
    mods["megatron.core.enums"].ModelType = ModelType
    return mods, ModelType.encoder_or_decoder


def test_args_with_a_megatron_enum_load_after_megatron_is_gone(tmp_path):
    mods, member = _fake_megatron_enum()
    sys.modules.update(mods)
    try:
        write_megatron(tiny_model("llama", vocab=512), tmp_path / "it", layout="core", model_type=member)
    finally:
        for name in mods:
            del sys.modules[name]
    ranks = load_ranks(tmp_path / "it")
    model_type = ranks[0]["args"].model_type
    assert isinstance(model_type, StandIn) and model_type.value == 1
    assert type(model_type).__qualname__ == "megatron.core.enums.ModelType"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    rank = tmp_path / "it" / "mp_rank_00"
    rank.mkdir(parents=True)
    torch.save({"args": None, "iteration": 1, "model": {"x": _Exploit(marker)}}, rank / "model_optim_rng.pt")
    with pytest.raises(SeriesError, match=r"asks to unpickle posix\.system.*refused"):
        load_ranks(tmp_path / "it")
    assert not marker.exists()


def test_unmapped_weights_are_refused(tmp_path):
    """A layout with biases would lose them in a Llama: refused, not silently dropped."""
    write_megatron(tiny_model("llama", vocab=512), tmp_path / "it", layout="core", tp=1)
    path = tmp_path / "it" / "mp_rank_00" / "model_optim_rng.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["model"]["decoder.layers.0.self_attention.linear_qkv.bias"] = torch.zeros(3)
    torch.save(ckpt, path)
    make_tokenizer().save_pretrained(tmp_path / "tok")
    with pytest.raises(SeriesError, match="linear_qkv.bias"):
        convert_megatron(tmp_path / "it", str(tmp_path / "tok"), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
