"""The typed objects a series is made of."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Checkpoint:
    """One training step of a series: where its weights are and how far training had got."""

    step: int
    tokens: float | None = None  # tokens seen so far; None when the source does not say
    path: Path | None = None  # a local folder loadable by transformers (None until downloaded)
    revision: str | None = None  # branch, folder or tag name at the source
    commit: str | None = None  # commit sha where the source has one
    weight_hashes: dict[str, str] = field(default_factory=dict)  # file -> sha256 (LFS)
    repo: str | None = None  # hub repo id
    subfolder: str | None = None  # for histories kept as folders on one branch (MAP-Neo)
    download_bytes: int = 0  # what scoring needs to download
    format: str = "hf"  # "hf" or "megatron"
    stage: str = ""  # training stage of multi-stage histories ("stage1", "stage2-ingredient1", "anneal")
    stage_step: int | None = None  # the step as the stage counts it (sources/_stages.py)
    source: str = ""  # what the weights are: a digest of the hub's LFS sha256s, or of the local files
    duplicate_of: int | None = None  # step whose weights are byte-identical (scored once)
    # integrity flags, set from the hub's listing before anything is downloaded (sources/_integrity.py)
    partial_duplicate_of: tuple[int, ...] = ()  # steps sharing some, not all, weight files
    shared_files: tuple[str, ...] = ()  # which files those are
    identical_to_final: bool = False  # a non-final step byte-identical to the final: a wrong upload
    config_id: str | None = None  # git blob id of config.json: equal ids, equal configs
    config_drift: str = ""  # how this step's config differs from the series' ("" if it does not)
    has_tokenizer: bool = True
    tokenizer_from: str | None = None  # revision whose tokenizer is used when this one has none
    tokenizer_ref: tuple[str, str | None] | None = None  # (commit, subfolder) of that revision
    tokenizer_path: Path | None = None  # a local tokenizer folder, when not `path` itself

    def weights_source(self) -> str:
        """`source`, or for a local folder listed without one, the digest of its weight files,
        computed now (local_digest: every byte hashed once, then cached by file stats). Local
        series list no digest, so a history of 7B folders starts scoring at once. Raises OSError when
        a weight file cannot be read (local_digest); nothing on purpose."""
        if self.source or self.path is None:
            return self.source
        return local_digest(self.path)

    def flags(self) -> dict[str, str]:
        """The integrity flags as strings, as the cube stores them ("" when not set). Raises nothing on
        purpose."""
        return {"duplicate_of": "" if self.duplicate_of is None else str(self.duplicate_of),
                "partial_duplicate_of": ",".join(map(str, self.partial_duplicate_of)),
                "identical_to_final": "true" if self.identical_to_final else "",
                "config_drift": self.config_drift, "tokenizer_from": self.tokenizer_from or "",
                "stage": self.stage}

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON values (paths as strings, None kept). Raises nothing on purpose."""
        d = asdict(self)
        for key in ("path", "tokenizer_path"):
            d[key] = None if d[key] is None else str(d[key])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Checkpoint":
        """The Checkpoint `to_json` gave. Raises nothing on purpose: a dict that is not one (a field
        unknown, `step` missing) is Python's TypeError from the constructor."""
        d = dict(d)
        for key in ("path", "tokenizer_path"):
            d[key] = None if d.get(key) is None else Path(d[key])
        for key in ("partial_duplicate_of", "shared_files"):
            d[key] = tuple(d.get(key, ()))
        if d.get("tokenizer_ref") is not None:
            d["tokenizer_ref"] = tuple(d["tokenizer_ref"])
        return cls(**d)


@dataclass(frozen=True)
class Series:
    """A model's checkpoint history. `model` names it in the cube; a member of a suite (seeds of one
    architecture) also says which suite, its seed and the kind of seed."""

    model: str
    checkpoints: list[Checkpoint]
    suite: str = ""
    seed: int | None = None
    seed_kind: str = ""

    def meta(self) -> dict[str, str]:
        """Suite, seed and seed kind as the cube stores them ("" when not a suite member). Raises nothing
        on purpose."""
        return {"suite": self.suite, "seed": "" if self.seed is None else str(self.seed),
                "seed_kind": self.seed_kind}


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def hashes_digest(hashes: dict[str, str]) -> str:
    """A short digest of {file: sha256}: what a checkpoint's weights are, as the hub lists them."""
    return "lfs:" + hashlib.sha256(json.dumps(sorted(hashes.items())).encode()).hexdigest()[:16]


def local_digest(folder: Path) -> str:
    """What a folder's weights are: a short digest of each weight file's name, size and xxh3-128 hash
    of all its bytes (redundancy/_digest.py), so a tensor changed anywhere in a file gives another digest
    and the store refuses the old cells as another model's. Hashes are cached while a file's size,
    times and inode are unchanged: a 7B checkpoint is read once, not at every listing.
    "xxh3:" + 16 hex digits; "files:" digests (first and last MiB only) were the previous scheme.
    Raises OSError when a weight file cannot be read."""
    from .._digest import file_digests

    files = sorted(p for p in Path(folder).iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    hashes = file_digests(files)
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}:{hashes[f]}\n".encode())
    return "xxh3:" + h.hexdigest()[:16]
