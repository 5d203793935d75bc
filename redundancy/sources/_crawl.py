"""`redundancy list` and `redundancy crawl`: a hub history into the cube."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ._checkpoint import Checkpoint, Series
from ._fetch import HubFetcher
from ._hub import list_checkpoints
from ._presets import Preset, make_preset, parse_tokens
from ._select import select
from ._stages import one_run, select_stages


def hub_series(repo: str, preset: str | None = None, pattern: str | None = None,
               tokens_per_step: float | None = None, every: str | None = None,
               steps: Sequence[int] | None = None, max_n: int | None = None,
               token: str | None = None, endpoint: str | None = None,
               stages: Sequence[str] | None = None) -> Series:
    """The selected checkpoints of a hub history (nothing downloaded). `repo` is a repo id; for a
    preset with one repo per step, an author (listed on the hub) or a comma-separated list of repos."""
    p = make_preset(preset, pattern, tokens_per_step)
    listed = list_checkpoints(repo, p, token=token, endpoint=endpoint)
    ckpts = one_run(select_stages(listed, list(stages or [])))
    chosen = select(ckpts, every=parse_tokens(every) if every else None, steps=steps, max_n=max_n)
    return Series(series_name(repo, p), chosen)


def series_name(repo: str, preset: Preset) -> str:
    """The model name in the cube: the repo, or for one repo per step "<author>/<preset>"."""
    if preset.exposed != "repos":
        return repo
    return f"{repo.split(',')[0].split('/')[0]}/{preset.name}"


def flag_text(c: Checkpoint) -> str:
    """Every integrity flag of one checkpoint, for people ("" when none)."""
    parts = []
    if c.identical_to_final:
        parts.append("identical to the final step (a wrong upload?): copied, left out of dynamics")
    elif c.duplicate_of is not None:
        parts.append(f"duplicate of step {c.duplicate_of}")
    if c.partial_duplicate_of:
        steps = ", ".join(map(str, c.partial_duplicate_of))
        parts.append(f"shares {', '.join(c.shared_files)} with step {steps}")
    if c.config_drift:
        parts.append(f"config drift: {c.config_drift}")
    if not c.has_tokenizer and c.format == "hf":
        parts.append(f"no tokenizer: uses {c.tokenizer_from}'s" if c.tokenizer_from
                     else "no tokenizer in the series")
    return "; ".join(parts)


def table(ckpts: list[Checkpoint]) -> list[str]:
    """Lines for `redundancy list`: step, tokens, revision, commit, size, flags."""
    rows = [f"{'step':>9} {'tokens':>10} {'revision':<34} {'commit':<10} {'download':>10}  flags"]
    for c in ckpts:
        tokens = "-" if c.tokens is None else f"{c.tokens / 1e9:.4g}B"
        rows.append(f"{c.step:>9} {tokens:>10} {c.revision:<34} {(c.commit or '')[:8]:<10} "
                    f"{c.download_bytes / 1e6:>8.1f}MB  {flag_text(c)}".rstrip())
    return rows


def report(ckpts: list[Checkpoint]) -> list[str]:
    """One line per flagged checkpoint, printed before anything is scored."""
    return [f"step {c.step} ({c.revision}): {text}" for c in ckpts if (text := flag_text(c))]


def fetcher(cache_dir: Path | None, token: str | None, endpoint: str | None, keep: bool,
            tokenizer: str | None) -> HubFetcher:
    return HubFetcher(cache_dir, token, endpoint, keep, tokenizer)
