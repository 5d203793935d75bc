"""Checkpoint histories on the Hugging Face hub: enumerate, fingerprint, download what scoring needs.

Names come from the hub's own listings (branches via list_repo_refs, folders via list_repo_tree),
never from arithmetic. Every weight file's LFS sha256 is recorded before anything is downloaded,
so byte-identical checkpoints are found without downloading them.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from .._atomic import atomic_file
from .._cache import cache_root
from ..errors import SeriesError
from ._checkpoint import Checkpoint, hashes_digest
from ._integrity import TOKENIZER_FILES, config_drift, mark_duplicates, mark_tokenizers
from ._presets import Preset
from ._stages import sequence

WEIGHTS = (".safetensors", ".bin", ".pt", ".distcp")
# what scoring needs from an HF checkpoint: weights, config, tokenizer; never optimizer state
TOKENIZER_PATTERNS = ["tokenizer*", "special_tokens_map.json", "vocab.*", "merges.txt", "*.model",
                      "*.tiktoken"]
HF_FILES = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
            *TOKENIZER_PATTERNS]
HF_BIN = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
# Megatron's two formats (sources/_megatron.py): torch (one file per rank) and torch_dist
MEGATRON_FILES = ["mp_rank_*/model_optim_rng.pt", "common.pt", "metadata.json", ".metadata", "*.distcp"]


def _api(token: str | None, endpoint: str | None):
    from huggingface_hub import HfApi
    return HfApi(endpoint=endpoint, token=token)


def wanted(files: list[str], fmt: str) -> list[str]:
    """Patterns (relative to a checkpoint's folder) of the files to download."""
    if fmt == "megatron":
        return MEGATRON_FILES
    has_st = any(f.endswith(".safetensors") for f in files)
    return HF_FILES if has_st else HF_FILES + HF_BIN


def _matches(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)


class _Entry(NamedTuple):
    step: int
    tokens: float | None
    stage: str
    name: str  # branch, folder or repo id
    commit: str
    subfolder: str | None
    repo: str


def _entries(api, repo: str, preset: Preset) -> list[_Entry]:
    """Every checkpoint the preset matches: branches or folders of `repo`, or repos (one per step)
    of the author `repo` (or of the comma-separated list `repo`)."""
    from huggingface_hub.hf_api import RepoFolder
    out = []
    if preset.exposed == "branches":
        for ref in api.list_repo_refs(repo).branches:
            if (parsed := preset.parse(ref.name)) is not None:
                out.append(_Entry(*parsed, ref.name, ref.target_commit, None, repo))
    elif preset.exposed == "folders":
        commit = api.model_info(repo).sha
        for entry in api.list_repo_tree(repo, revision=commit):
            if isinstance(entry, RepoFolder) and (parsed := preset.parse(entry.path)) is not None:
                out.append(_Entry(*parsed, entry.path, commit, entry.path, repo))
    else:
        ids = repo.split(",") if "," in repo or "/" in repo else [
            m.id for m in api.list_models(author=repo, search=preset.search)]
        for rid in ids:
            if (parsed := preset.parse(rid.split("/", 1)[-1])) is not None:
                out.append(_Entry(*parsed, rid, api.model_info(rid).sha, None, rid))
    return out


def _describe(api, e: _Entry, fmt: str) -> Checkpoint:
    tree = api.list_repo_tree(e.repo, path_in_repo=e.subfolder, recursive=True, revision=e.commit)
    files = {f.path: f for f in tree if hasattr(f, "size")}
    sub = e.subfolder
    rel = {p[len(sub) + 1:] if sub else p: f for p, f in files.items()}
    patterns = wanted(list(rel), fmt)
    keep = {p: f for p, f in rel.items() if _matches(p, patterns)}
    hashes = {p: (f.lfs.sha256 if f.lfs else f.blob_id) for p, f in keep.items() if p.endswith(WEIGHTS)}
    config = rel.get("config.json")
    return Checkpoint(step=e.step, tokens=e.tokens, revision=e.name, commit=e.commit, weight_hashes=hashes,
                      repo=e.repo, subfolder=sub, download_bytes=sum(f.size for f in keep.values()),
                      format=fmt, config_id=config.blob_id if config else None, source=hashes_digest(hashes),
                      has_tokenizer=fmt == "megatron" or any(p in rel for p in TOKENIZER_FILES),
                      stage=e.stage)


def list_checkpoints(repo: str, preset: Preset, *, token: str | None = None,
                     endpoint: str | None = None) -> list[Checkpoint]:
    """Every checkpoint of `repo` the preset recognises, sorted by step, with its integrity flags
    (duplicates per weight file, identical_to_final, config drift, missing tokenizer). No weights are
    downloaded: only the distinct config.json files, to compare them.

    Offline (HF_HUB_OFFLINE=1) or unreachable: the listing saved by the last online call.
    """
    try:
        api = _api(token, endpoint)
        entries = _entries(api, repo, preset)
        ckpts = [_describe(api, e, preset.format) for e in entries]
        if not ckpts:
            raise SeriesError(f"{repo} has no {preset.exposed} matching {preset.pattern!r} "
                              f"(preset {preset.name})")
        ckpts = sequence(ckpts, preset.stage_order, restart=preset.stages == "restart")
        ckpts = mark_tokenizers(mark_duplicates(ckpts))
        ckpts = config_drift(ckpts, lambda c: _read_config(c, token, endpoint))
    except Exception as exc:  # noqa: BLE001 - translated into one clear message
        cached = _load_listing(repo, preset)
        if cached is not None and _is_network(exc):
            return cached
        raise _hub_error(exc, repo) from exc
    _save_listing(repo, preset, ckpts)
    return ckpts


def _read_config(c: Checkpoint, token: str | None, endpoint: str | None) -> dict:
    from huggingface_hub import hf_hub_download
    path = hf_hub_download(c.repo, "config.json", subfolder=c.subfolder, revision=c.commit, token=token,
                           endpoint=endpoint)
    return json.loads(Path(path).read_text())


def _listing_path(repo: str, preset: Preset) -> Path:
    key = repo.replace("/", "--") if len(repo) < 100 else hashlib.sha256(repo.encode()).hexdigest()[:16]
    return cache_root() / "listings" / f"{key}--{preset.name}.json"


def _save_listing(repo: str, preset: Preset, ckpts: list[Checkpoint]) -> None:
    atomic_file(_listing_path(repo, preset), json.dumps([c.to_json() for c in ckpts]))


def _load_listing(repo: str, preset: Preset) -> list[Checkpoint] | None:
    path = _listing_path(repo, preset)
    return [Checkpoint.from_json(d) for d in json.loads(path.read_text())] if path.exists() else None


def _is_network(exc: Exception) -> bool:
    import httpx
    from huggingface_hub.errors import OfflineModeIsEnabled
    return isinstance(exc, (OfflineModeIsEnabled, httpx.TransportError, ConnectionError, OSError))


def _hub_error(exc: Exception, repo: str) -> SeriesError:
    from huggingface_hub import errors as e
    if isinstance(exc, e.GatedRepoError):
        return SeriesError(f"{repo} is gated: accept its terms on the hub, then pass --token or set HF_TOKEN")
    if isinstance(exc, e.RepositoryNotFoundError):
        return SeriesError(f"{repo} is not on the hub (or is private: pass --token); check the name")
    if isinstance(exc, e.RevisionNotFoundError):
        return SeriesError(f"{repo}: revision not found ({exc}); list the checkpoints with `redundancy list`")
    if _is_network(exc):
        return SeriesError(f"cannot reach the hub for {repo} ({type(exc).__name__}); check the network "
                           "(or HF_HUB_OFFLINE), then run again: finished steps stay in the cube")
    return exc if isinstance(exc, SeriesError) else SeriesError(f"{repo}: {type(exc).__name__}: {exc}")
