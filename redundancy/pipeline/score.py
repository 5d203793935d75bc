"""Score a series into a cube: sources -> calibration -> scoring -> cube, resumable per cell."""
from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from .._config import check_folder_text_only, check_text_only, max_positions
from .._load import check_token_ids, load_tokenizer
from ..calibration import calibration_tokens
from ..cube import CubeStore, make_cell
from ..errors import CalibrationError, StoreError
from ..scoring import METRICS, Scorer, score_layerwise
from ..sources import Checkpoint, Series
from ._plan import plan_cells, prefetched
from .settings import DTYPES, Events, Fetcher, ScoreSettings


def load_checkpoint(ckpt: Checkpoint, *, device: str, dtype: str):
    """(model, tokenizer) of one checkpoint, in eval mode on `device` (a torch device name) in `dtype`
    (a key of DTYPES). Raises SeriesError (weights that do not match the config, unreadable files, a
    refused pickle, an unloadable tokenizer); UnsupportedFamilyError or RedundancyError (a config.json
    that is no text model of a known family)."""
    from .._load import load_model, load_tokenizer

    label = f"step {ckpt.step} ({ckpt.path})"
    check_folder_text_only(ckpt.path, label)  # before the weights: scoring reads the family table
    model = load_model(ckpt.path, label, dtype=DTYPES[dtype])
    return model.to(device), load_tokenizer(ckpt.tokenizer_path or ckpt.path, label)


def score_series(series: Series, store: CubeStore, settings: ScoreSettings, *,
                 events: Events | None = None, fetcher: Fetcher | None = None) -> Events:
    """Score every (checkpoint, dataset) cell not yet in `store`; returns events with what was written
    (`events.written`: (step, dataset) pairs).

    A checkpoint byte-identical to an earlier one (duplicate_of) is not scored again: its cells are
    copies of the original's, marked with duplicate_of.

    Raises StoreError (the store is no cube, holds other settings, another source under a calibration
    set's name, or a checkpoint scored from other weights); SeriesError (a checkpoint's files cannot be
    loaded); CalibrationError (a set too small, offline, or --seq-len past the model's context);
    UnsupportedFamilyError (a model_type outside the family table); SelfCheckError (hook sites that do
    not rebuild a layer); NonFiniteActivationError (NaN or inf in the residual stream).
    """
    ev = events or Events()
    store.prepare(ev.log)
    check_sources(store, settings)
    plan = plan_cells(series, store, list(settings.sets()), ev.log)  # sets resolved once, in settings
    for ckpt in plan.done:
        ev.checkpoint(ckpt, "done already")
    missing_of = {c.step: m for c, m in plan.todo}  # built once: a history has hundreds of checkpoints
    for ckpt, ready in prefetched([c for c, _ in plan.todo], fetcher):
        missing = missing_of[ckpt.step]
        ev.checkpoint(ckpt, "scoring")
        if ready.tokenizer_path is not None:
            ev.log(f"step {ckpt.step}: {ckpt.revision} has no tokenizer files; using "
                   f"{ckpt.tokenizer_from or ready.tokenizer_path}'s")
        _score_checkpoint(series.model, ready, datasets=missing, store=store, s=settings, ev=ev,
                          meta=series.meta())
        ev.checkpoint(ckpt, "scored")
    for ckpt, missing in plan.copies:  # originals are all in the store now
        ev.written += _copy_duplicate(store, series.model, ckpt, missing)
        ev.checkpoint(ckpt, "scored")
    store.compact()  # the next open reads one index object
    return ev


def check_sources(store: CubeStore, settings: ScoreSettings) -> None:
    """Refuse a calibration set whose short name the store already holds from another source.
    Raises StoreError."""
    from ..calibration._spec import same_place
    for name, cset in settings.sets().items():
        spec = settings.specs()[name]
        stored = store.dataset_source(cset.name)
        if stored and "@" not in stored and same_place(stored, cset.source):
            continue  # recorded before files recorded their bytes: nothing to compare
        if stored and stored != cset.source and same_place(stored, cset.source):
            was, now = stored.partition("@")[2], cset.source.partition("@")[2]
            raise StoreError(f"{spec} changed since {store.path} scored calibration set {cset.name!r} from "
                             f"it ({was}, now {now}): its cells would mix two texts under one name. "
                             "Restore the file, or score the new text into another --out (or under "
                             "another name: copy it to a new file)")
        if stored and stored != cset.source:
            raise StoreError(f"{store.path} holds calibration set {cset.name!r} read from {stored}; "
                             f"{spec!r} reads {cset.source}: another source under the same name. "
                             "Rename the file or use another --out")


def _copy_duplicate(store: CubeStore, model: str, ckpt: Checkpoint,
                    datasets: list[str]) -> list[tuple[int, str]]:
    written = []
    for d in datasets:
        cell = store.read_cell(model, ckpt.duplicate_of, d)
        tokens = np.float64(np.nan if ckpt.tokens is None else ckpt.tokens)
        cell = cell.assign_coords(step=ckpt.step, tokens=tokens)
        for key, value in ckpt.flags().items():  # the copy's own flags (identical_to_final, ...)
            cell[key] = ((), np.array(value, dtype=object))
        cell["revision"] = ((), np.array(ckpt.commit or ckpt.revision or "", dtype=object))
        if store.write_cell(cell):
            written.append((ckpt.step, d))
    return written


def _check_context(config: Any, model_name: str, ckpt: Checkpoint, seq_len: int) -> None:
    """CalibrationError when seq_len exceeds the context (max_position_embeddings, n_positions,
    seq_length: _config.max_positions)."""
    context = max_positions(config)
    if context is not None and seq_len > context:
        raise CalibrationError(f"--seq-len {seq_len} is longer than {model_name} step {ckpt.step}'s "
                               f"context of {context} tokens; use --seq-len {context} or less")


def _score_checkpoint(model_name: str, ckpt: Checkpoint, datasets: list[str], store: CubeStore,
                      s: ScoreSettings, ev: Events, meta: dict[str, str] | None = None) -> None:
    """`meta`: the series' suite, seed and seed kind, stored with every cell."""
    ckpt = replace(ckpt, source=ckpt.weights_source())  # once for all its cells
    if s.layerwise:
        return _score_checkpoint_layerwise(model_name, ckpt, datasets=datasets, store=store, s=s, ev=ev,
                                           meta=meta)
    model, tokenizer = load_checkpoint(ckpt, device=s.device, dtype=s.dtype)
    _check_context(model.config, model_name, ckpt, s.seq_len)
    scorer = Scorer(model, s.metrics)
    sets = s.sets()  # resolved once, in the settings
    for name in datasets:
        calib = calibration_tokens(sets[name], tokenizer, n=s.n_samples, seq_len=s.seq_len, seed=s.seed,
                                   text_field=s.text_field)
        check_token_ids(calib.tokens, model, f"{model_name} step {ckpt.step}")
        ev.dataset(name, s.n_samples)
        scores = scorer.score(calib.tokens, s.batch_size, on_batch=ev.batches)
        cell = make_cell(scores, scorer.metric_names, model=model_name, step=ckpt.step, dataset=name,
                         tokens=ckpt.tokens, provenance=_provenance(ckpt, calib, s, meta))
        if store.write_cell(cell):
            ev.written.append((ckpt.step, name))


def _score_checkpoint_layerwise(model_name: str, ckpt: Checkpoint, datasets: list[str], store: CubeStore,
                                s: ScoreSettings, ev: Events, meta: dict[str, str] | None = None) -> None:
    """Every calibration set in one sweep over the layers: each layer's weights are read once."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ckpt.path)
    check_text_only(config, f"{model_name} step {ckpt.step}")
    _check_context(config, model_name, ckpt, s.seq_len)
    tokenizer = load_tokenizer(ckpt.tokenizer_path or ckpt.path, f"{model_name} step {ckpt.step}")
    sets = s.sets()  # resolved once, in the settings
    calibs = [calibration_tokens(sets[name], tokenizer, n=s.n_samples, seq_len=s.seq_len, seed=s.seed,
                                 text_field=s.text_field) for name in datasets]
    ev.dataset("+".join(datasets) + " (layer by layer)", len(datasets) * s.n_samples)
    scores = score_layerwise(ckpt.path, torch.cat([c.tokens for c in calibs]), batch_size=s.batch_size,
                             device=s.device, dtype=DTYPES[s.dtype],
                             metrics=s.metrics)  # (len(datasets) * n, L, 3, M)
    ev.batches(len(datasets) * s.n_samples)
    names = [METRICS.get(m).name for m in s.metrics]
    for i, (name, calib) in enumerate(zip(datasets, calibs)):
        cell = make_cell(scores[i * s.n_samples:(i + 1) * s.n_samples], names, model=model_name,
                         step=ckpt.step, dataset=name, tokens=ckpt.tokens,
                         provenance=_provenance(ckpt, calib, s, meta))
        if store.write_cell(cell):
            ev.written.append((ckpt.step, name))


def _provenance(ckpt: Checkpoint, calib: Any, s: ScoreSettings,
                meta: dict[str, str] | None = None) -> dict[str, str]:
    scored_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return dict(fingerprint=calib.fingerprint, calibration_source=calib.source, dtype=s.dtype,
                device=s.device, revision=ckpt.commit or ckpt.revision or "", source=ckpt.weights_source(),
                package_version=version("redundancy"),
                **ckpt.flags(), **(meta or {}), scored_at=scored_at)
