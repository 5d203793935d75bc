"""Config fields in every form the hub serves them (issue 19): a list of eos ids and no pad id
(Llama-3), torch_dtype vs dtype, rope_theta at the top vs rope_parameters, gpt2's n_positions,
seq_length, falcon's kv heads, and a multimodal wrapper's nested text_config."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer, Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

from redundancy import _config as C
from redundancy.calibration import heldout_tokens
from redundancy.calibration._packing import pack
from redundancy.drop import load_any
from redundancy.errors import CalibrationError, RedundancyError, UnsupportedFamilyError
from redundancy.scoring import Scorer
from redundancy.study import StudySettings, run_study
from redundancy.study.perplexity import perplexity
from redundancy.study.speed import measure_speed

from _models import tiny_model
from _support import make_tokenizer

VOCAB = 512
LLAMA3_EOS = [5, 7, 0]  # as meta-llama/Meta-Llama-3.1-8B-Instruct: three eos ids, no pad_token_id


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _rewrite(folder: Path, name: str = "config.json", drop: tuple[str, ...] = (), **fields) -> dict:
    """Rewrite one JSON file of a checkpoint folder: `drop` keys removed, `fields` set."""
    raw = json.loads((folder / name).read_text())
    for key in drop:
        raw.pop(key, None)
    raw.update(fields)
    (folder / name).write_text(json.dumps(raw))
    return raw


@pytest.fixture(scope="module")
def llama3(tmp_path_factory, tok):
    """A tiny Llama saved as Llama-3.1-Instruct's files are: eos a list in config.json and in
    generation_config.json, no pad id anywhere. Its head is zero: every logit is 0, so greedy
    decoding picks token 0 (an eos id, third in the list) at every step, and the perplexity of
    any window is exactly the vocabulary size."""
    folder = tmp_path_factory.mktemp("llama3")
    model = tiny_model("llama", vocab=VOCAB)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    _rewrite(folder, drop=("pad_token_id",), eos_token_id=LLAMA3_EOS, bos_token_id=1)
    _rewrite(folder, "generation_config.json", drop=("pad_token_id",), eos_token_id=LLAMA3_EOS)
    return folder


def test_speed_with_a_list_of_eos_ids_and_no_pad(llama3):
    # before: pad_token_id=[5, 7, 0] -> TypeError in GenerationConfig.validate, after evaluating
    model = load_any(llama3)
    assert model.config.eos_token_id == LLAMA3_EOS and model.config.pad_token_id is None
    r = measure_speed(model, prompt_tokens=8, new_tokens=6, batch=2, warmup=0, repeats=2)
    # greedy picks eos id 0 first; every eos id is masked until 6 tokens are made (measure_speed
    # raises otherwise), and the count is the study's: prompt and new tokens of every row
    assert r.tokens_per_s * r.seconds == pytest.approx(2 * (8 + 6)) and len(r.seconds_each) == 2
    # 2 kv heads x 16 dims x (8 + 6 - 1) positions x batch 2 x fp32 x (k and v) x 4 layers
    assert r.kv_cache_bytes == 2 * 16 * 13 * 2 * 4 * 2 * 4


@pytest.mark.slow
def test_study_keeps_every_row_of_a_llama3_checkpoint(llama3, tmp_path):
    # before: the TypeError above came after the baseline's evaluation, and its row was lost
    from redundancy.study import open_results

    s = StudySettings(ks={"attn": [1]}, quantize=(), limit=2, prompt_tokens=8, new_tokens=4, repeats=2,
                      eval_batch=4)
    ds = open_results(run_study(llama3, {"attn": [3, 2, 1]}, tmp_path / "out", s, "llama3", 0))
    assert sorted(ds["plan"].values) == ["Attn-1", "baseline"]
    assert ds["tokens_per_s"].notnull().all() and ds["score"].notnull().all()


def test_generation_gets_one_pad_id_and_every_eos_id(llama3, tok):
    model = load_any(llama3)
    assert C.eos_ids(model.config, model.generation_config) == (5, 7, 0)
    assert C.pad_id(model.config, model.generation_config) == 5  # no pad: the first eos, as generate()
    assert tok.eos_token_id == tok.pad_token_id == 0  # <|endoftext|>, already in the list: not repeated
    assert C.eos_ids(model.config, model.generation_config, tok) == (5, 7, 0)
    assert C.eos_ids(model.config, None, SimpleNamespace(eos_token_id=9)) == (5, 7, 0, 9)
    assert C.pad_id(model.config, model.generation_config, tok) == 0  # a pad only in the tokenizer
    # a pad id only in generation_config.json; -1 ("none" in some hub configs) counts as absent
    assert C.pad_id({"eos_token_id": [3, 4], "pad_token_id": -1}, {"pad_token_id": 9}) == 9
    assert C.pad_id({"eos_token_id": None}) == 0 and C.eos_ids({}) == ()
    with pytest.raises(RedundancyError, match="eos_token_id in config.json is '</s>'"):
        C.eos_ids({"eos_token_id": "</s>"})


def test_perplexity_and_packing_of_a_llama3_checkpoint(llama3):
    model, tokenizer = load_any(llama3), AutoTokenizer.from_pretrained(llama3)
    tokens = heldout_tokens("math", tokenizer, n=2, seq_len=16, scored=(2, 16)).tokens
    assert perplexity(model, tokens) == pytest.approx(VOCAB, rel=1e-5)  # every logit 0: NLL = log V
    # documents are joined with the tokenizer's one eos id, not the config's list
    docs = ["one two three", "four five", "six seven eight nine"]
    stream = [i for d in docs for i in tokenizer(d, add_special_tokens=False)["input_ids"]
              + [tokenizer.eos_token_id]]
    got = pack(docs, tokenizer, n=len(stream) // 3, seq_len=3, seed=0)
    assert torch.equal(got, torch.tensor(stream[:len(stream) // 3 * 3]).reshape(-1, 3))


def test_packing_takes_the_first_id_of_a_tokenizer_that_lists_several(tok):
    class Listing:  # a tokenizer-like object whose eos_token_id is a list (as Llama-3's config)
        eos_token_id = [tok.eos_token_id, 3]

        def __call__(self, texts, add_special_tokens=False):
            return tok(texts, add_special_tokens=add_special_tokens)

    docs = ["one two three", "four five"]
    assert torch.equal(pack(docs, Listing(), n=2, seq_len=3, seed=0), pack(docs, tok, n=2, seq_len=3, seed=0))


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_load_reads_dtype_and_torch_dtype(tmp_path, tok, key):
    tiny_model("llama", vocab=VOCAB).to(torch.bfloat16).save_pretrained(tmp_path)
    raw = _rewrite(tmp_path, drop=("dtype", "torch_dtype"), **{key: "bfloat16"})
    assert C.torch_dtype(raw) is torch.bfloat16  # transformers 5 writes dtype; older files torch_dtype
    assert load_any(tmp_path).dtype is torch.bfloat16
    with pytest.raises(RedundancyError, match="'bfloat17' is not a torch dtype"):
        C.torch_dtype({key: "bfloat17"})


def test_rope_settings_in_either_place(tmp_path):
    old = {"model_type": "llama", "rope_theta": 500000.0, "rope_scaling": None}  # before transformers 5
    new = {"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    neox = {"model_type": "gpt_neox", "rotary_pct": 0.25, "rotary_emb_base": 10000}
    assert C.rope_parameters(old) == {"rope_theta": 500000.0}
    assert C.rope_parameters(new) == {"rope_type": "default", "rope_theta": 500000.0}
    assert C.rope_parameters(neox) == {"rope_theta": 10000.0}
    assert C.rope_parameters({"model_type": "gpt2", "n_positions": 1024}) is None
    # both files load to the same rotary frequencies
    for i, form in enumerate((old, new)):
        model = tiny_model("llama", vocab=VOCAB)
        model.save_pretrained(tmp_path / str(i))
        _rewrite(tmp_path / str(i), drop=("rope_parameters", "rope_theta", "rope_scaling"),
                 **{k: v for k, v in form.items() if k != "model_type"})
    freqs = [load_any(tmp_path / str(i)).model.rotary_emb.inv_freq for i in range(2)]
    assert torch.equal(*freqs) and freqs[0][1] == pytest.approx(500000.0 ** (-2 / 16))


def test_context_in_every_name():
    assert C.max_positions({"max_position_embeddings": 4096}) == 4096
    assert C.max_positions({"model_type": "gpt2", "n_positions": 1024}) == 1024
    assert C.max_positions({"seq_length": 2048}) == 2048 and C.max_positions({}) is None
    assert C.max_positions(tiny_model("gpt2").config) == 256  # attribute_map: n_positions
    # learned positions (gpt2) are a hard limit; rotary and ALiBi models compute every position
    assert C.position_limit(tiny_model("gpt2").config) == 256
    assert C.position_limit(tiny_model("llama").config) is None
    assert C.position_limit({"model_type": "bloom", "seq_length": 2048}) is None


def test_scoring_checks_seq_len_against_seq_length():
    from redundancy.pipeline.score import _check_context

    remote = SimpleNamespace(model_type="chatglm", seq_length=32)  # remote-code configs name it so
    with pytest.raises(CalibrationError, match="context of 32 tokens; use --seq-len 32"):
        _check_context(remote, "m", SimpleNamespace(step=0), 64)


def test_widths_and_kv_heads_in_every_name():
    assert C.hidden_size({"n_embd": 768}) == 768 and C.hidden_size({"hidden_size": 4096}) == 4096
    assert C.kv_heads({"num_key_value_heads": 8, "num_attention_heads": 32}) == 8
    assert C.kv_heads({"multi_query": True, "n_head": 71}) == 1  # Falcon-7B
    assert C.kv_heads({"new_decoder_architecture": True, "num_kv_heads": 8, "num_attention_heads": 128}) == 8
    assert C.kv_heads({"n_head": 12}) == 12  # gpt2: one kv head per head
    assert C.kv_heads(tiny_model("falcon").config) == 1


def test_study_refuses_a_learned_position_table_too_short_before_any_work(tmp_path, tok):
    # before: the baseline was evaluated, then generation ran past gpt2's 256 positions (IndexError)
    src = tmp_path / "gpt2"
    tiny_model("gpt2", vocab=VOCAB).save_pretrained(src)
    tok.save_pretrained(src)
    s = StudySettings(ks={}, quantize=(), prompt_tokens=200, new_tokens=100, repeats=2)
    with pytest.raises(RedundancyError, match="--prompt 200 \\+ --new 100 .*exceed.* 256 positions"):
        run_study(src, {}, tmp_path / "out", s, "gpt2", 0)
    assert not (tmp_path / "out").exists()


def _gemma3(eos=(1, 106)) -> Gemma3Config:
    text = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, vocab_size=VOCAB, max_position_embeddings=256,
                            sliding_window=8, eos_token_id=list(eos), pad_token_id=0)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, image_size=32, patch_size=8)
    return Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)


def test_fields_are_read_through_text_config():
    from transformers import AutoModelForCausalLM

    config = _gemma3()
    assert not hasattr(config, "vocab_size")  # the wrapper has none: only its text_config
    assert C.vocab_size(config) == VOCAB and C.max_positions(config) == 256
    assert C.eos_ids(config) == (1, 106) and C.pad_id(config) == 0
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()  # Gemma3ForConditionalGeneration
    # before: AttributeError, the wrapper has no vocab_size
    r = measure_speed(model, prompt_tokens=8, new_tokens=4, batch=1, warmup=0, repeats=1)
    assert r.tokens_per_s * r.seconds == pytest.approx(8 + 4)


def test_family_steps_refuse_a_wrapper_in_one_line(tmp_path):
    from transformers import AutoModelForCausalLM

    from redundancy.pipeline.score import load_checkpoint

    config = _gemma3()
    config.save_pretrained(tmp_path / "wrapper")  # config.json only: refused before any weight is read
    named = "model_type 'gemma3' is a multimodal wrapper: its text model's fields live under text_config"
    with pytest.raises(UnsupportedFamilyError, match=named) as err:
        short = StudySettings(ks={}, quantize=(), prompt_tokens=8, new_tokens=4)  # within its 256 positions
        run_study(tmp_path / "wrapper", {}, tmp_path / "out", short, "g", 0)
    assert "\n" not in str(err.value) and "model_type gemma3_text" in str(err.value)
    with pytest.raises(UnsupportedFamilyError, match=named):
        ckpt = SimpleNamespace(step=0, path=tmp_path / "wrapper", tokenizer_path=None)
        load_checkpoint(ckpt, device="cpu", dtype="float32")
    with pytest.raises(UnsupportedFamilyError, match=named):
        Scorer(AutoModelForCausalLM.from_config(config))
    assert C.check_text_only(tiny_model("gemma3_text").config) is None  # the text model alone: scored


def test_a_checkpoint_without_its_rotary_limit_is_timed_past_its_context(tmp_path, tok):
    from redundancy.study.chain import check_checkpoint

    tiny_model("llama", vocab=VOCAB).save_pretrained(tmp_path)  # 256 positions, rotary
    tok.save_pretrained(tmp_path)  # check_checkpoint loads the tokenizer as the chain will
    assert C.max_positions(C.read_config(tmp_path)) == 256
    check_checkpoint(tmp_path, StudySettings(prompt_tokens=2048, new_tokens=2048, quantize=()))  # no error
