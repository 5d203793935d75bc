"""`builtin:tiny`: train a small Llama from scratch on CPU, saving log-spaced checkpoints.

Deterministic for a recipe (redundancy/data/builtin_tiny.yaml), cached under a key derived from it.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any, Callable

import torch

from .._atomic import atomic_dir, locked
from .._cache import cache_root
from .._data import load_yaml
from ..calibration import _corpora
from ._task import task_documents

Progress = Callable[[str, int, int], None]  # (what, done, total)
EOS = "<|endoftext|>"


def default_recipe() -> dict[str, Any]:
    return load_yaml("builtin_tiny.yaml")


def series_dir(recipe: dict[str, Any], cache: Path | None = None) -> Path:
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return (cache or cache_root()) / f"builtin-tiny-{key}"


def _documents(source: str, seed: int):
    return {"task": lambda: task_documents(seed), "prose": _corpora.stdlib_docstrings,
            "code": _corpora.stdlib_source, "math": lambda: _corpora.math_problems(seed + 1)}[source]()


def _texts(recipe: dict[str, Any]) -> dict[str, list[str]]:
    """Per source, enough documents for its share of the training tokens (~4 chars a token)."""
    t = recipe["train"]
    total = t["steps"] * t["batch_size"] * t["seq_len"]
    texts = {}
    for source, share in recipe["mixture"].items():
        docs, chars = [], 0
        for doc in _documents(source, recipe["seed"]):
            doc = doc[:20_000]  # no single module dominates a source
            docs.append(doc)
            chars += len(doc)
            if chars >= share * total * 5:
                break
        texts[source] = docs
    return texts


def _train_tokenizer(texts: dict[str, list[str]], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((d for docs in texts.values() for d in docs), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS,
                                   unk_token=EOS, pad_token=EOS, model_max_length=10**6)


def _windows(texts: dict[str, list[str]], tokenizer, recipe: dict[str, Any]) -> torch.Tensor:
    """(steps * batch, seq_len) training windows, sources in their shares, shuffled by seed."""
    t = recipe["train"]
    n_total, seq = t["steps"] * t["batch_size"], t["seq_len"]
    rows: list[list[int]] = []
    for source, share in recipe["mixture"].items():
        stream = [i for ids in tokenizer(texts[source])["input_ids"] for i in ids + [tokenizer.eos_token_id]]
        n = round(share * n_total)
        have = max(len(stream) // seq, 1)
        rows += [stream[(k % have) * seq:(k % have + 1) * seq] for k in range(n)]
    random.Random(recipe["seed"]).shuffle(rows)
    rows = (rows * 2)[:n_total]
    return torch.tensor(rows, dtype=torch.int64)


def build_tiny_series(recipe: dict[str, Any] | None = None, *, cache: Path | None = None,
                      progress: Progress | None = None) -> Path:
    """Train (once) and return the folder of checkpoints `step-NNNNNN/`, each loadable by transformers."""
    recipe = recipe or default_recipe()
    out = series_dir(recipe, cache)
    if (out / "series.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked(out, timeout=-1):  # another process training the same recipe: wait for it
        if (out / "series.json").exists():  # another process built it while we waited
            return out
        with atomic_dir(out, overwrite=True) as tmp:  # an `out` without series.json is incomplete
            _train(recipe, tmp, progress or (lambda *a: None))
    return out


def _train(recipe: dict[str, Any], out: Path, progress: Progress) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(recipe["seed"])
    progress("preparing text and tokenizer", 0, 1)
    texts = _texts(recipe)
    tokenizer = _train_tokenizer(texts, recipe["tokenizer"]["vocab_size"])
    data = _windows(texts, tokenizer, recipe)
    m = dict(recipe["model"])
    config = AutoConfig.for_model(m.pop("model_type"), vocab_size=len(tokenizer), **m,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    t = recipe["train"]
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"],
                            betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, t["warmup"], t["steps"]))
    saves, curve, tokens_per_step = set(recipe["checkpoints"]), [], t["batch_size"] * t["seq_len"]
    for step in range(t["steps"] + 1):
        if step in saves:
            _save(model, tokenizer, path=out / f"step-{step:06d}", step=step, tokens=step * tokens_per_step,
                  curve=curve)
        if step == t["steps"]:
            break
        batch = data[step * t["batch_size"]:(step + 1) * t["batch_size"]]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), schedule.step(), opt.zero_grad(set_to_none=True)
        curve.append({"step": step + 1, "tokens": (step + 1) * tokens_per_step, "loss": loss.item()})
        progress("training builtin:tiny", step + 1, t["steps"])
    (out / "series.json").write_text(json.dumps({"recipe": recipe, "loss_curve": curve}, indent=1))


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _save(model, tokenizer, path: Path, step: int, tokens: int, curve: list[dict]) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per shard would drown our own progress
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    loss = curve[-1]["loss"] if curve else None
    (path / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": tokens, "loss": loss}))
