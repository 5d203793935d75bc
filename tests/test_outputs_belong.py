"""Issue 24 part 5: an output belongs to what produced it. A study rerun into an earlier study's
--out with another checkpoint, order or setting makes its models and rows again (saying why);
the same inputs reuse them."""
from __future__ import annotations

import json

import pytest

from redundancy.study import StudySettings, open_results, run_study

from _models import tiny_model
from _support import make_tokenizer


def _checkpoint(folder, seed):
    tiny_model("llama", seed=seed, vocab=512).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.slow  # four small studies (lm-eval, timing)
def test_a_study_into_another_studys_out_makes_its_models_again(tmp_path):
    a, b = _checkpoint(tmp_path / "step-128", 0), _checkpoint(tmp_path / "step-300", 1)
    s = StudySettings(ks={"attn": [1]}, quantize=(), limit=2, prompt_tokens=8, new_tokens=4, repeats=2,
                      eval_batch=4, ppl_samples=0)
    out, said = tmp_path / "study", []
    run_study(a, {"attn": [3, 2, 1]}, out, s, "m", 128, log=said.append)
    made = (out / "models" / "Attn-1.recipe.json").read_text()
    first = open_results(out / "results.zarr").sel(model="m", step=128)["score"].copy()

    said.clear()  # the same inputs: nothing is made or measured again
    run_study(a, {"attn": [3, 2, 1]}, out, s, "m", 128, log=said.append)
    assert not [line for line in said if "again" in line]

    said.clear()  # another checkpoint into the same --out (the step-128 then step-300 case)
    run_study(b, {"attn": [3, 2, 1]}, out, s, "m", 300, log=said.append)
    assert any("Attn-1: the model" in line and "weights" in line for line in said), said
    assert json.loads((out / "models" / "Attn-1.recipe.json").read_text()) != json.loads(made)

    said.clear()  # another order (--dataset math after prose): another plan, made again
    run_study(b, {"attn": [2, 3, 1]}, out, s, "m", 300, log=said.append)
    assert any("Attn-1: the model" in line and "drop_attn" in line for line in said), said
    assert any("Attn-1: its row" in line and "drop_attn" in line for line in said), said

    said.clear()  # another --limit: the rows are measured again, the models kept
    run_study(b, {"attn": [2, 3, 1]}, out, s.__class__(**{**s.__dict__, "limit": 3}), "m", 300,
              log=said.append)
    assert not any("the model" in line for line in said)
    assert any("baseline: its row" in line and "limit" in line for line in said), said
    ds = open_results(out / "results.zarr")
    assert ds.sel(model="m", step=128)["score"].equals(first)  # the other step's rows kept
