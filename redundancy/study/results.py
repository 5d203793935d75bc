"""The results store: evaluation scores and generation speed per (model, step, plan).

Variables: `score` and `score_stderr` (model, step, plan, task); `perplexity` on held-out windows
(model, step, plan, dataset); `tokens_per_s`, `seconds` (median), `kv_cache_bytes`,
`peak_memory_bytes` (model, step, plan) and `seconds_each` (model, step, plan, repeat); for plans
timed in pairs with the baseline (speed.paired_speed), `baseline_seconds_each` (the baseline's side of
each pair) and `speedup_bound` (the most the plan can give, speed.speedup_bound); what each
plan is, over `plan`: `kind` (baseline, attn, mlp, block, joint, custom), `n_dropped` (modules
dropped), `quant` (none, awq, gptq).
`open_results` adds `average` (and `average_stderr`), `pct_of_baseline`, `speedup` with the range
its repeats allow (`speedup_low`, `speedup_high`; `speedup_noise` where that range covers 1.0; for
paired plans the median, lowest and highest per-pair ratio, and `speedup_disturbed` where the median
exceeds `speedup_bound`: the timing was disturbed, not the plan that fast) and `gamma` (the study's
SDR, undefined where nothing is gained or the speedup is noise or disturbed), each against the plan
named "baseline".

Layout: STORE/current -> STORE/v-<seq>-<id>, a zarr group holding every row, with `.manifest.json`
(the size and sha256 of each of its files, written last). Small, so a write reads the newest whole
version under an inter-process lock, writes a new one beside it, reads it back against its manifest
and only then swaps the `current` link (one atomic rename): a kill at any instant leaves the old or the
new version current, never none, and concurrent writers never lose a row. The version before the
current one is kept: a current version found damaged later (a file deleted or changed, its link lost)
is read from it, and the next write repairs the store from it; where nothing whole remains, reading
and writing stop in one line that says what is damaged. Reading takes no lock and creates no file
(read-only stores, shared folders): a writer removes a version only two writes after it stopped being
current, and a reader whose version vanished reads again.

Stores written before this layout (a zarr group at STORE itself) are read, and converted on their
next write inside STORE: the new version is written and made current beside the old group, whose
files are removed only after the switch (a kill at any step leaves every row readable).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import xarray as xr

from .._atomic import INCOMPLETE, atomic_dir, is_stale, locked
from .._stores import describe, store_kind
from ..errors import StoreError

BASELINE = "baseline"
SPEED_VARS = ("tokens_per_s", "seconds", "kv_cache_bytes", "peak_memory_bytes", "speedup_bound")
ROW = ("model", "step", "plan")
KIND_ORDER = ("baseline", "block", "mlp", "attn", "joint", "custom")  # the study's Table 1 order
MANIFEST = ".manifest.json"  # in each version, written last: size and sha256 of every other file
_FORMAT = "redundancy-results/2"
_VERSION = re.compile(r"v-(\d+)-[0-9a-f]+")  # v-<seq>-<id>; older stores' versions are v-<id>, no manifest


def _per(coords: dict, dim: str, values: dict[Any, float], keys: list | None = None) -> xr.DataArray:
    """One row's values over a further dimension `dim` (task, dataset, repeat), NaN where absent."""
    keys = keys if keys is not None else sorted(values)
    data = np.array([values.get(k, np.nan) for k in keys], dtype=float)[None, None, None]
    return xr.DataArray(data, dims=(*ROW, dim), coords={**coords, dim: keys})


def _row(model: str, step: int, plan: str, scores: dict[str, float] | None, speed: dict[str, Any] | None,
         meta: dict[str, Any], stderr: dict[str, float] | None = None,
         perplexity: dict[str, float] | None = None, recipe: str | None = None) -> xr.Dataset:
    coords = {"model": [model], "step": [step], "plan": [plan]}
    ds = xr.Dataset(coords=coords)
    if recipe is not None:  # what the row was measured from (study/chain.py _row_recipe), as JSON
        ds["recipe"] = (ROW, np.array([[[recipe]]], dtype=object))
    if scores:
        ds["score"] = _per(coords, "task", scores)
        if stderr:
            ds["score_stderr"] = _per(coords, "task", stderr, sorted(scores))
    if perplexity:
        ds["perplexity"] = _per(coords, "dataset", perplexity)
    for var in SPEED_VARS if speed else ():
        ds[var] = (ROW, np.full((1, 1, 1), np.nan if speed.get(var) is None else float(speed[var])))
    for var in ("seconds_each", "baseline_seconds_each"):
        if speed and speed.get(var):
            ds[var] = _per(coords, "repeat", dict(enumerate(speed[var])))
    for key, value in meta.items():
        ds[key] = ("plan", np.array([value], dtype=object if isinstance(value, str) else int))
    return ds


def write_results(path: str | Path, model: str, step: int, plan: str,
                  scores: dict[str, float] | None = None, speed: dict[str, Any] | None = None, *,
                  kind: str | None = None, n_dropped: int | None = None,
                  quant: str = "none", stderr: dict[str, float] | None = None,
                  perplexity: dict[str, float] | None = None, recipe: str | None = None,
                  log: Callable[[str], None] | None = None) -> xr.Dataset:
    """Add or update one (model, step, plan) row: given values replace stored ones, others are kept.
    `recipe`: what the row was measured from (JSON; the study compares it before reusing a row); a
    row stored from another recipe is forgotten first (none of its values is kept beside new ones);
    `stderr`: lm-eval's standard error of each task's score (stored as `score_stderr`);
    `perplexity`: calibration set -> perplexity on its held-out windows; `log`: where a repair is
    reported (default a RuntimeWarning).

    Raises StoreError: `path` holds another kind of store or output (a cube, a model, figures, a zarr
    store of something else: nothing in it is touched), or a results store with nothing whole left."""
    path, log = Path(path), log or _warn
    check_results_out(path)  # before the lock: a refused write creates nothing, not even a lock file
    kind = kind or (BASELINE if plan == BASELINE else "custom")
    meta = dict(kind=kind, n_dropped=n_dropped or 0, quant=quant)
    new = _objects(_row(model, step=step, plan=plan, scores=scores, speed=speed, meta=meta, stderr=stderr,
                        perplexity=perplexity, recipe=recipe))
    with locked(path):
        _restore_aside(path, log)
        check_results_out(path)  # another process may have put something else there meanwhile
        base = _whole(path, log) if store_kind(path) == "results" else None
        if base is not None:
            new = new.combine_first(_forget_other_recipe(_load(base), (model, step, plan), recipe))
        _publish_version(path, new, base, (model, int(step), plan))
    return _derived(new)  # what open_results would read back: the version was verified against it


def _forget_other_recipe(ds: xr.Dataset, row: tuple[str, int, str], recipe: str | None) -> xr.Dataset:
    """`ds` with the row's values blanked where it was measured from another recipe than `recipe`
    (None: any recipe goes), so that a row never mixes values of two recipes."""
    where = dict(zip(ROW, ([row[0]], [int(row[1])], [row[2]])))
    if recipe is None or "recipe" not in ds or any(v not in ds[k].values for k, v in zip(ROW, row)):
        return ds
    if ds["recipe"].loc[where].item() == recipe:
        return ds
    ds = ds.copy(deep=True)
    for name, var in ds.data_vars.items():
        if set(ROW) <= set(var.dims):
            ds[name].loc[where] = None if var.dtype == object else np.nan
    return ds


def check_results_out(path: str | Path) -> Path:
    """`path` as a Path, where a results store is or may be written (absent, an empty folder, or a
    results store). Raises StoreError naming what is there otherwise (callers check before working)."""
    path = Path(path)
    found = store_kind(path)
    if found not in ("results", "empty"):
        raise StoreError(f"{path} is {describe(found, path)}, not a results store; nothing in it was "
                         "changed: write the results to another --out")
    return path


class _Vanished(Exception):
    """A version was removed while it was read: a writer moved two versions on. Read again."""


def _read(path: Path, log: Callable[[str], None]) -> xr.Dataset:
    """The rows of the store at `path`, read without a lock and without creating any file."""
    store = path if store_kind(path) != "empty" else (_aside(path) or path)
    found = store_kind(store)
    if found != "results":
        what = "not a results store" if found == "empty" else f"{describe(found, path)}, not a results store"
        raise StoreError(f"{path} is {what}; write one with `redundancy study` or "
                         "`redundancy evaluate --out`")
    if store != path:
        log(f"{path} is missing: reading {store.name}, where a killed conversion left it "
            "(the next write puts it back)")
    for _ in range(20):
        version = None
        try:
            version = _whole(store, log)
            return _load(version)
        except _Vanished:
            continue
        except Exception:  # noqa: BLE001 - a version removed mid-read fails in zarr's own ways
            if version is None or _present(version, store):
                raise
    raise StoreError(f"{path} kept changing while it was read (writers faster than a read); run again")


def _present(version: Path, store: Path) -> bool:
    return (version / "zarr.json").exists() if version == store else version.exists()


def _whole(store: Path, log: Callable[[str], None]) -> Path:
    """The version to read: the current one or, where it is damaged or its link lost, the newest whole
    one (said in `log`). Raises StoreError where none is whole; _Vanished where a version was removed
    while we looked."""
    candidates, why = _candidates(store)
    damaged: list[tuple[Path, str]] = []
    for version in candidates:
        what = damage(version)
        if not _present(version, store):
            raise _Vanished
        if not what:
            if damaged or why:
                log(_fallback_note(store, version, damaged, why))
            return version
        damaged.append((version, what))
    listed = "; ".join([why] * bool(why) + [f"{_name(v, store)}: {w}" for v, w in damaged])
    raise StoreError(f"{store} is a damaged results store with no whole version left ({listed}); restore "
                     "it from a copy, or move it aside and write its rows again")


def _fallback_note(store: Path, version: Path, damaged: list[tuple[Path, str]], why: str) -> str:
    said = [why] * bool(why) + [f"{_name(v, store)} is damaged ({w})" for v, w in damaged]
    lost = [row for v, _ in damaged if (row := _last_write(v))]
    lacks = f", without the later write of {', '.join(lost)}: write it again" if lost else \
        ", without the damaged version's last write: write it again" if damaged else ""
    return (f"{store}: {'; '.join(said)}. Read {_name(version, store)}, the newest whole version{lacks}. "
            "The next write repairs the store from it")


def _candidates(store: Path) -> tuple[list[Path], str]:
    """Versions to read, best first, and why the first is not the current one ("" when it is)."""
    versions = _versions(store)
    link = store / "current"
    if link.is_symlink():
        target = store / os.readlink(link)
        if target in versions:  # newer ones were never switched to: writers killed before their switch
            return [target] + [v for v in versions if _order(v) < _order(target)], ""
        why = f"its current link points to {os.readlink(link)}, which is not there"
    else:
        why = "its current link is missing"
    if (store / "zarr.json").exists():  # the older single-group layout: current until converted
        return [store, *versions], ""
    return versions, why


def _versions(store: Path) -> list[Path]:
    """Every published version, newest first."""
    return sorted((p for p in store.iterdir() if p.name.startswith("v-") and p.is_dir()), key=_order,
                  reverse=True)


def _order(version: Path) -> tuple[int, float]:
    try:
        mtime = version.stat().st_mtime
    except OSError:
        mtime = 0.0
    return _seq(version), mtime


def _seq(version: Path) -> int:
    m = _VERSION.fullmatch(version.name)
    return int(m.group(1)) if m else 0


def _name(version: Path, store: Path) -> str:
    return "the older single-group layout" if version == store else version.name


def damage(version: Path) -> str:
    """"" for a whole version, else what is wrong with it: files missing, truncated or changed against
    its manifest. Versions written before manifests existed must read back. Raises nothing on purpose:
    damage is the answer, not an error."""
    manifest = version / MANIFEST
    if not manifest.exists():
        if _VERSION.fullmatch(version.name):
            return f"{MANIFEST} missing"
        return "" if _readable(version) else "unreadable"
    wrong = []
    try:
        for name, (size, digest) in json.loads(manifest.read_text())["files"].items():
            f = version / name
            if not f.is_file():
                wrong.append(f"{name} missing")
            elif f.stat().st_size != size:
                wrong.append(f"{name} truncated")
            elif _sha256(f) != digest:
                wrong.append(f"{name} changed")
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} unreadable"
    except OSError as exc:
        wrong.append(f"{exc.filename or version}: {exc.strerror}")
    return ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")


def _readable(version: Path) -> bool:
    try:
        _load(version)
    except Exception:  # noqa: BLE001 - any read failure is damage
        return False
    return True


def _last_write(version: Path) -> str:
    """The row a version's write added ("m step 0 Attn-2"), "" where its manifest cannot say."""
    try:
        model, step, plan = json.loads((version / MANIFEST).read_text())["row"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f"{model} step {step} {plan}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load(version: Path) -> xr.Dataset:
    with warnings.catch_warnings():  # zarr warns of entries not its own: our manifest, and while an
        # older store is converted, the new version beside its group
        warnings.filterwarnings("ignore", message=r"Object at \S+ is not recognized as a component")
        # numpy, not dask: the store is small, and a dask graph costs more than the read
        return _objects(xr.open_zarr(str(version), consolidated=False, chunks=None).load())


def _publish_version(store: Path, ds: xr.Dataset, base: Path | None, row: tuple[str, int, str]) -> None:
    """Write `ds` as a new version, read it back against its manifest, point `current` at it, then
    remove what neither it nor `base` (the version it was built on, kept for repairs) needs."""
    store.mkdir(parents=True, exist_ok=True)
    seq = 1 + max((_seq(v) for v in _versions(store)), default=0)
    version = store / f"v-{seq:06d}-{uuid.uuid4().hex[:8]}"
    with atomic_dir(version) as tmp:
        ds.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=False)
        files = {str(p.relative_to(tmp)): [p.stat().st_size, _sha256(p)] for p in sorted(tmp.rglob("*"))
                 if p.is_file() and p.name != INCOMPLETE}
        (tmp / MANIFEST).write_text(json.dumps({"format": _FORMAT, "row": list(row), "files": files}))
    if what := damage(version):  # known whole before it becomes current
        shutil.rmtree(version, ignore_errors=True)
        raise StoreError(f"{version} did not read back as written ({what}); the store is as it was: "
                         "check the disk and run again")
    link = store / f".current-{uuid.uuid4().hex[:8]}"
    os.symlink(version.name, link)
    os.replace(link, store / "current")  # the switch: one rename
    _tidy(store, {version, base})


def _tidy(store: Path, keep: set[Path | None]) -> None:
    """After a switch, under the lock: remove the older layout's files (its zarr.json first: from then
    on nothing reads them), versions other than `keep` (renamed away first, so that a reader sees one
    whole or not at all), and what killed writers left (temporary versions, links, removals)."""
    (store / "zarr.json").unlink(missing_ok=True)
    for p in list(store.iterdir()):
        if p in keep or p.name == "current":
            continue
        if p.name.startswith("v-") and p.is_dir():
            gone = store / f".{p.name}.removed-{uuid.uuid4().hex[:8]}"
            os.rename(p, gone)
            p = gone
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _aside(path: Path) -> Path | None:
    """A store that a conversion killed under an earlier version of this module left renamed aside
    (`.NAME.old-*`, nothing at NAME), or None."""
    for aside in sorted(path.parent.glob(f".{path.name}.old-*")):
        if store_kind(aside) == "results":
            return aside
    return None


def _restore_aside(path: Path, log: Callable[[str], None]) -> None:
    """Under the lock: put back a store left aside by a killed conversion (see `_aside`), and remove
    the temporary copies such conversions left, so that its rows are not lost to a new store."""
    if store_kind(path) != "empty" or (aside := _aside(path)) is None:
        return
    if path.exists():
        path.rmdir()
    os.rename(aside, path)
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        if is_stale(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"{path}: put back from {aside.name}, where a killed conversion had left it")


def check_results(path: str | Path) -> tuple[list[str], bool]:
    """What `redundancy check` says of a results store, line by line, and whether it is sound: each
    version against its manifest, the current link, and what the next write repairs from. Raises nothing on
    purpose: what is wrong is in the lines."""
    store = Path(path)
    candidates, why = _candidates(store)
    lines, whole = [why] * bool(why), None
    for i, version in enumerate(candidates):
        what = damage(version)
        where = " (current)" if i == 0 and not why else ""
        lines.append(f"{_name(version, store)}{where}: " + (f"damaged: {what}" if what else "whole"))
        if not what and whole is None:
            whole = version
    if whole is None:
        lines.append("nothing whole is left: restore it from a copy, or move it aside and write its "
                     "rows again")
    elif whole != candidates[0] or why:
        lost = [row for v in candidates[:candidates.index(whole)] if (row := _last_write(v))]
        lines.append(f"the next write repairs it from {_name(whole, store)}"
                     + (f" (the later write of {', '.join(lost)} is lost: write it again)" if lost else ""))
    return lines, whole is not None and whole == candidates[0] and not why


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _objects(ds: xr.Dataset) -> xr.Dataset:
    """Strings as object arrays: zarr's vlen strings append longer names and align with NaN fills."""
    strings = [n for n in ds.variables if ds[n].dtype.kind in "UT"]
    return ds.assign({n: ds[n].astype(object) for n in strings if n not in ds.coords}).assign_coords(
        {n: ds[n].values.astype(object) for n in strings if n in ds.coords})


def has_results(path: str | Path) -> bool:
    """True when `path` is a results store (whole or damaged: reading it says which). Raises nothing on
    purpose."""
    return store_kind(path) == "results"


def open_results(path: str | Path, *, log: Callable[[str], None] | None = None) -> xr.Dataset:
    """The store with `average`, `pct_of_baseline`, `speedup` and `gamma` against the baseline plan.

    Read from the current version or, where that is damaged or its link lost, from the newest whole
    one (`log`, default a RuntimeWarning, says which and what the damaged one held). Raises
    StoreError: `path` is not a results store, or nothing in it is whole."""
    return _derived(_read(Path(path), log or _warn))


def _derived(ds: xr.Dataset) -> xr.Dataset:
    """The stored rows with the variables open_results derives from them."""
    if "score" in ds:
        ds["average"] = ds["score"].mean("task")
    if "score_stderr" in ds:  # tasks independent: the mean's standard error
        ds["average_stderr"] = np.sqrt((ds["score_stderr"] ** 2).sum("task", skipna=False)) / ds.sizes["task"]
    if BASELINE not in ds["plan"].values:
        return ds
    base = ds.sel(plan=BASELINE)
    if "average" in ds:
        ds["pct_of_baseline"] = 100 * ds["average"] / base["average"]
    ds = _speedups(ds, base)
    if "average" in ds and "speedup" in ds:
        gain = 100 * (ds["speedup"] - 1)  # gamma = (average drop %) / (speedup %): the study's SDR
        noise = ds["speedup_noise"] if "speedup_noise" in ds else xr.zeros_like(gain, dtype=bool)
        if "speedup_disturbed" in ds:
            noise = noise | ds["speedup_disturbed"]
        real = (gain > 0) & ~noise
        ds["gamma"] = (100 - ds["pct_of_baseline"]) / gain.where(real)
    return ds


def _speedups(ds: xr.Dataset, base: xr.Dataset) -> xr.Dataset:
    """Speedup against `base` (the baseline's row) with its range, noise and disturbed flags."""
    if "tokens_per_s" in ds:
        ds["speedup"] = ds["tokens_per_s"] / base["tokens_per_s"]
    if "seconds_each" in ds:  # the range speedup_range gives: slowest against fastest, both ways
        each = ds["seconds_each"]
        ds["speedup_low"] = base["seconds_each"].min("repeat") / each.max("repeat")
        ds["speedup_high"] = base["seconds_each"].max("repeat") / each.min("repeat")
    if "baseline_seconds_each" in ds:  # paired (speed.paired_speedup): per-pair ratios, same window
        ratio = ds["baseline_seconds_each"] / ds["seconds_each"]
        paired = ratio.notnull().any("repeat")
        ds["speedup"] = ds["speedup"].where(~paired, ratio.median("repeat"))
        ds["speedup_low"] = ds["speedup_low"].where(~paired, ratio.min("repeat"))
        ds["speedup_high"] = ds["speedup_high"].where(~paired, ratio.max("repeat"))
    if "seconds_each" in ds:
        ds["speedup_noise"] = (ds["speedup_low"] <= 1) & (ds["speedup_high"] >= 1)
    if "speedup_bound" in ds and "speedup" in ds:  # above what the plan can give: not a result
        ds["speedup_disturbed"] = ds["speedup"] > ds["speedup_bound"]
    return ds


def results_table(ds: xr.Dataset, model: str, step: int, *, threshold: float = 95.0) -> pd.DataFrame:
    """The study's Table 1 for one (model, step): one row per plan (baseline first, then by kind and
    count), task scores, held-out perplexity per set ("ppl SET"), average, % of baseline, speedup
    with its range (`speedup_disturbed` where above the plan's bound), gamma, KV cache, and `below`
    (under `threshold` % of the baseline average). Raises nothing on purpose: a (model, step) the
    store lacks is xarray's KeyError from `ds.sel`."""
    row = ds.sel(model=model, step=step)
    cols = [c for c in ("average", "average_stderr", "pct_of_baseline", "speedup", "speedup_low",
                        "speedup_high", "speedup_noise", "speedup_disturbed", "speedup_bound", "gamma",
                        "kv_cache_bytes") if c in row]
    frame = row["score"].to_pandas() if "score" in row else pd.DataFrame(index=row["plan"].values)
    if "perplexity" in row:  # one column per calibration set: "ppl prose"
        frame = frame.join(row["perplexity"].to_pandas().rename(columns=lambda d: f"ppl {d}"))
    for c in cols:
        frame[c] = row[c].to_pandas()
    for c in ("kind", "n_dropped", "quant"):
        frame[c] = row[c].to_pandas()
    frame["below"] = frame.get("pct_of_baseline", pd.Series(100.0, index=frame.index)) < threshold
    labels = ("kind", "n_dropped", "quant", "below", "speedup_noise", "speedup_disturbed",
              "speedup_bound")  # not enough to keep a row
    frame = frame.dropna(how="all", subset=[c for c in frame.columns if c not in labels])
    frame["n_dropped"] = frame["n_dropped"].astype(int)
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    keys = frame.assign(_b=frame.index != BASELINE, _k=frame["kind"].map(lambda k: rank.get(k, len(rank))),
                        _q=frame["quant"] != "none")
    return frame.loc[keys.sort_values(["_b", "_k", "n_dropped", "_q", "quant"]).index]
