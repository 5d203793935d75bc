"""`redundancy list` and `redundancy crawl`: a hub history into the cube."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ._checkpoint import Checkpoint, Series
from ._fetch import HubFetcher
from ._hub import list_checkpoints
from ._presets import make_preset, parse_tokens
from ._select import select


def hub_series(repo: str, preset: str | None = None, pattern: str | None = None,
               tokens_per_step: float | None = None, every: str | None = None,
               steps: Sequence[int] | None = None, max_n: int | None = None,
               token: str | None = None, endpoint: str | None = None) -> Series:
    """The selected checkpoints of a hub repo (nothing downloaded)."""
    p = make_preset(preset, pattern, tokens_per_step)
    ckpts = list_checkpoints(repo, p, token=token, endpoint=endpoint)
    chosen = select(ckpts, every=parse_tokens(every) if every else None, steps=steps, max_n=max_n)
    return Series(repo, chosen)


def table(ckpts: list[Checkpoint]) -> list[str]:
    """Lines for `redundancy list`: step, tokens, revision, commit, size, duplicate."""
    rows = [f"{'step':>9} {'tokens':>10} {'revision':<34} {'commit':<10} {'download':>10}  duplicate_of"]
    for c in ckpts:
        tokens = "-" if c.tokens is None else f"{c.tokens / 1e9:.3g}B"
        dup = "" if c.duplicate_of is None else f"step {c.duplicate_of}"
        rows.append(f"{c.step:>9} {tokens:>10} {c.revision:<34} {(c.commit or '')[:8]:<10} "
                    f"{c.download_bytes / 1e6:>8.1f}MB  {dup}")
    return rows


def fetcher(cache_dir: Path | None, token: str | None, endpoint: str | None, keep: bool,
            tokenizer: str | None) -> HubFetcher:
    return HubFetcher(cache_dir, token, endpoint, keep, tokenizer)
