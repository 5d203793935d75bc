"""What a published history really serves: duplicates per weight file, wrong uploads of the final
weights, config drift across steps, revisions without a tokenizer.

Seen upstream: Pythia's step0 equals step1 (EleutherAI/pythia#83); in pythia-2.8b 86 of 154 branches,
step0 among them, serve the final weights (#195, #205); pythia-12b step50000 and step58000 share one
shard, not all, with the final model (#206); three OLMo-2-7B stage-1 branches are identical
(allenai/OLMo#915). Everything here reads the hub's listing (LFS sha256 per file, git blob ids);
only distinct config.json files are downloaded.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any, Callable

from ..errors import SeriesError
from ._checkpoint import Checkpoint

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
# config fields whose change makes two steps different models, not two points of one history
DRIFT_KEYS = ("model_type", "architectures", "vocab_size", "dtype", "torch_dtype", "num_hidden_layers",
              "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def mark_duplicates(ckpts: list[Checkpoint]) -> list[Checkpoint]:
    """duplicate_of (all weight files equal an earlier step's), identical_to_final (a non-final step
    equal to the last: the final is kept as the original) and partial_duplicate_of (some files shared)."""
    for c in ckpts:
        if not c.weight_hashes:
            raise SeriesError(f"{c.repo} {c.revision} has no weight files; choose other steps")
    key = {c.step: tuple(sorted(c.weight_hashes.values())) for c in ckpts}
    final = ckpts[-1].step
    first: dict[tuple, int] = {key[final]: final}
    out = []
    for c in ckpts:
        if c.step != final and key[c.step] == key[final]:
            out.append(replace(c, duplicate_of=final, identical_to_final=True))
        elif key[c.step] in first and first[key[c.step]] != c.step:
            out.append(replace(c, duplicate_of=first[key[c.step]]))
        else:
            first.setdefault(key[c.step], c.step)
            out.append(c)
    owners: dict[str, set[int]] = defaultdict(set)  # file hash -> originals holding it (copies left out)
    for c in out:
        for h in c.weight_hashes.values() if c.duplicate_of is None else ():
            owners[h].add(c.step)
    return [_partial(c, owners, key) if c.duplicate_of is None else c for c in out]


def _partial(c: Checkpoint, owners: dict[str, set[int]], key: dict[int, tuple]) -> Checkpoint:
    """Flag the files `c` shares with steps whose weights differ from its own as a whole."""
    shared = {f: {s for s in owners[h] if key[s] != key[c.step]} for f, h in c.weight_hashes.items()}
    shared = {f: s for f, s in shared.items() if s}
    if not shared:
        return c
    return replace(c, partial_duplicate_of=tuple(sorted(set().union(*shared.values()))),
                   shared_files=tuple(sorted(shared)))


def mark_tokenizers(ckpts: list[Checkpoint]) -> list[Checkpoint]:
    """A revision without tokenizer files borrows the series' tokenizer: the latest revision with one."""
    donors = [c for c in ckpts if c.has_tokenizer]
    if not donors or len(donors) == len(ckpts):
        return ckpts
    donor = donors[-1]
    return [c if c.has_tokenizer else replace(c, tokenizer_from=donor.revision,
                                               tokenizer_ref=(donor.commit, donor.subfolder)) for c in ckpts]


def config_drift(ckpts: list[Checkpoint], read: Callable[[Checkpoint], dict[str, Any]]) -> list[Checkpoint]:
    """Set config_drift on steps whose architecture, vocabulary or dtype differs from most steps'.

    `read(ckpt)` returns a config.json as a dict; it is called once per distinct config_id.
    """
    by_id: dict[str, list[Checkpoint]] = defaultdict(list)
    for c in ckpts:
        if c.config_id:
            by_id[c.config_id].append(c)
    if len(by_id) < 2:
        return ckpts  # one config for the whole series: nothing can drift
    sig = {cid: _signature(read(group[-1])) for cid, group in by_id.items()}
    votes = Counter({s: 0 for s in sig.values()})
    for cid, group in by_id.items():
        votes[sig[cid]] += len(group)
    final_sig = sig.get(ckpts[-1].config_id)
    ref = max(votes, key=lambda s: (votes[s], s == final_sig))  # ties: the final step's config
    return [replace(c, config_drift=_describe(sig[c.config_id], ref))
            if c.config_id and sig[c.config_id] != ref else c for c in ckpts]


def _signature(config: dict[str, Any]) -> tuple:
    values = {k: config.get(k) for k in DRIFT_KEYS}
    values["dtype"] = values.pop("dtype") or values.pop("torch_dtype")
    values.pop("torch_dtype", None)
    return tuple(sorted((k, str(v)) for k, v in values.items()))


def _describe(sig: tuple, ref: tuple) -> str:
    mine, theirs = dict(sig), dict(ref)
    return "; ".join(f"{k} {mine[k]} (the series: {theirs[k]})" for k in mine if mine[k] != theirs[k])
