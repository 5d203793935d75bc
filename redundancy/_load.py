"""Strict loading: a checkpoint whose weights do not match its config is refused, never scored.

transformers fills missing weights with random ones and drops unexpected ones with a warning; a
config asking for more layers than the weights hold would then be scored with random layers. Here
any missing, unexpected or mismatched weight, and any failure to read the files (truncated
safetensors, a config that is not JSON or has no model_type, a refused pickle), is one SeriesError.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ._config import text_config
from .errors import SeriesError, one_line


def load_model(path: str | Path, label: str = "", **kwargs: Any):
    """AutoModelForCausalLM.from_pretrained(path, **kwargs), in eval mode, refusing any weight mismatch."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    label = label or str(path)
    hf_logging.disable_progress_bar()
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would repeat what the error below says
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
    except pickle.UnpicklingError as exc:  # .bin files are read with weights_only=True
        detail = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
        raise SeriesError(f"{label}: a weight file holds objects other than tensors and was refused "
                          f"unread, as it could run code ({detail})") from None
    except Exception as exc:  # noqa: BLE001 - truncated files, bad config, unknown architecture...
        raise SeriesError(f"cannot load {label}: {one_line(exc)}; check the files (a truncated download "
                          "is fixed by deleting it from the cache and running again)") from None
    finally:
        hf_logging.set_verbosity(before)
    _check_info(info, label, model.config)
    return model.eval()


def _check_info(info: dict[str, Any], label: str, config: Any) -> None:
    parts = [f"{len(keys)} {what} (e.g. {sorted(keys)[0]})" for what, keys in
             (("missing", info.get("missing_keys") or []), ("unexpected", info.get("unexpected_keys") or []),
              ("of another shape", info.get("mismatched_keys") or [])) if keys]
    if parts:
        layers = getattr(text_config(config), "num_hidden_layers", "?")  # a wrapper's are under text_config
        raise SeriesError(f"{label}: config.json and the weights disagree ({'; '.join(map(str, parts))} "
                          f"weights; the config says {layers} layers): refused rather than scored with "
                          "random weights. Fix config.json or the weight files")


def load_tokenizer(path: str | Path, label: str = ""):
    """AutoTokenizer.from_pretrained(path), with any failure as one SeriesError. Never runs code from
    the folder (a dropped checkpoint's auto_map would otherwise make transformers ask, at a prompt)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise SeriesError(f"cannot load the tokenizer of {label or path}: {one_line(exc)}; add the tokenizer "
                          "files to the folder (or pass --tokenizer for hub histories)") from None


def check_token_ids(tokens: Any, model: Any, label: str) -> None:
    """Refuse token ids beyond the model's embedding: tokenizer and weights do not belong together."""
    rows = model.get_input_embeddings().num_embeddings
    top = int(tokens.max())
    if top >= rows:
        raise SeriesError(f"{label}: the tokenizer gives token id {top}, but the embedding has {rows} rows: "
                          "tokenizer and weights do not belong together (use the model's own tokenizer)")
