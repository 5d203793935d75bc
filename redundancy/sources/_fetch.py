"""Download a hub checkpoint's scoring files (never optimizer state), and free them afterwards."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from .._cache import cache_root
from ..errors import SeriesError
from ._checkpoint import Checkpoint
from ._hub import TOKENIZER_PATTERNS, _hub_error, wanted


class HubFetcher:
    """Fetcher for hub checkpoints: snapshot_download with allow_patterns, a free-disk check first,
    and, unless `keep`, the revision's files deleted from the cache once it is scored."""

    def __init__(self, cache_dir: Path | None = None, token: str | None = None, endpoint: str | None = None,
                 keep: bool = False, tokenizer: str | None = None) -> None:
        self.cache_dir, self.token, self.endpoint = cache_dir, token, endpoint
        self.keep, self.tokenizer = keep, tokenizer

    def fetch(self, ckpt: Checkpoint) -> Checkpoint:
        self._check_disk(ckpt)
        patterns = wanted(list(ckpt.weight_hashes), ckpt.format)
        path = self._download(ckpt.repo, ckpt.commit, ckpt.subfolder, patterns)
        if ckpt.format == "hf" and not ckpt.has_tokenizer:
            return replace(ckpt, path=path, tokenizer_path=self._borrowed_tokenizer(ckpt))
        if ckpt.format == "megatron":  # tokens seen come from the checkpoint's own args
            from ._megatron import convert_cached
            path = convert_cached(path, self.tokenizer, self._converted(ckpt))
            meta = json.loads((path / "checkpoint.json").read_text())
            return replace(ckpt, path=path, tokens=meta["tokens"])
        return replace(ckpt, path=path)

    def _download(self, repo: str, commit: str | None, subfolder: str | None, patterns: list[str]) -> Path:
        from huggingface_hub import snapshot_download

        prefix = f"{subfolder}/" if subfolder else ""
        try:
            root = snapshot_download(repo, revision=commit, allow_patterns=[prefix + p for p in patterns],
                                     cache_dir=self._cache(), token=self.token, endpoint=self.endpoint)
        except Exception as exc:  # noqa: BLE001
            raise _hub_error(exc, repo) from exc
        return Path(root) / (subfolder or "")

    def _borrowed_tokenizer(self, ckpt: Checkpoint) -> Path:
        """The tokenizer of a revision that has none: --tokenizer, else the series' (tokenizer_ref)."""
        if self.tokenizer is not None:
            local = Path(self.tokenizer).expanduser()
            return local if local.is_dir() else self._download(self.tokenizer, None, None, TOKENIZER_PATTERNS)
        if ckpt.tokenizer_ref is None:
            raise SeriesError(f"{ckpt.repo} {ckpt.revision} has no tokenizer files and no revision of the "
                              "series has any: pass --tokenizer REPO_OR_FOLDER")
        commit, subfolder = ckpt.tokenizer_ref
        return self._download(ckpt.repo, commit, subfolder, TOKENIZER_PATTERNS)

    def _converted(self, ckpt: Checkpoint) -> Path:
        return cache_root() / "converted" / ckpt.repo.replace("/", "--") / (ckpt.subfolder or ckpt.revision)

    def _cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else _default_cache()

    def _check_disk(self, ckpt: Checkpoint) -> None:
        target = self._cache()
        target.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target).free
        if ckpt.download_bytes > 0.95 * free:
            raise SeriesError(f"{ckpt.repo} {ckpt.revision} needs {_size(ckpt.download_bytes)}, only "
                              f"{_size(free)} free in {target}; free space or pass --cache-dir")

    def release(self, ckpt: Checkpoint) -> None:
        """Delete this checkpoint's files from the cache; blobs other snapshots link to stay.

        By path, within this repo's folder: huggingface_hub's scan_cache_dir().delete_revisions()
        scans the whole cache, which Ray workers share while they download, and raced with them
        (an OSError mid-scan); one revision may also hold every step's folder (MAP-Neo)."""
        if self.keep or ckpt.path is None:
            return
        if ckpt.format == "megatron":
            shutil.rmtree(self._converted(ckpt), ignore_errors=True)
        _release_folder(_snapshot_root(ckpt, self._cache()), ckpt.subfolder or "")


def _release_folder(root: Path, subfolder: str) -> None:
    """Unlink one folder of a snapshot, and each blob no other link of the repo points to."""
    mine = [p for p in (root / subfolder).rglob("*") if p.is_symlink()]
    others = {p.resolve() for p in root.parent.rglob("*") if p.is_symlink() and p not in set(mine)}
    for link in mine:
        blob = link.resolve()
        link.unlink()
        if blob not in others:  # config and tokenizer files are often shared by every step
            blob.unlink(missing_ok=True)


def _default_cache() -> Path:
    """HF_HUB_CACHE, read now (huggingface_hub reads it once, at import)."""
    import os

    from huggingface_hub import constants
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _snapshot_root(ckpt: Checkpoint, cache: Path) -> Path:
    return cache / f"models--{ckpt.repo.replace('/', '--')}" / "snapshots" / ckpt.commit
