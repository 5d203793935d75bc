"""What a path holds: every kind of store and output this toolkit writes, told apart from each other
and from everything else, so that no writer replaces or writes into another kind (`_atomic.check_output`,
`CubeStore.open`, `write_results` ask here first).

Kinds: "cube" (a scoring cube, orders included), "results" (a results store, any layout), "study"
(the folder of `redundancy study`), "figures" (PNG/PDF figures), "dropped", "quantized" and
"checkpoint" (model folders), "zarr" (a zarr store this toolkit did not write), "empty" (absent, or a
folder with nothing in it) and "unknown" (a file, or a folder of anything else).

Reading a path's kind opens no file for writing and creates nothing: it works on read-only stores.
"""
from __future__ import annotations

import json
from pathlib import Path

CUBE_FORMAT = "redundancy-cube/2"  # the cube's root attribute `format` (cube/_store.py)
# cubes written before format 2: still read, converted by `check --repair`
CUBE_FORMAT_1 = "redundancy-cube/1"
FIGURES_MARKER = ".figures.json"  # in every folder analyses.save writes into, holding FIGURES_FORMAT
FIGURES_FORMAT = {"format": "redundancy-figures/1"}
_FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
_STUDY_ENTRIES = {"results.zarr", "results.zarr.lock", "models", "table.csv", "table.md", "figures"}
_WORDS = {
    "cube": "a scoring cube", "results": "a results store", "study": "a study folder",
    "figures": "a figures folder", "dropped": "a dropped model", "quantized": "a quantized model",
    "checkpoint": "a model checkpoint", "zarr": "a zarr store written by something else",
    "empty": "an empty folder",
}


def store_kind(path: str | Path) -> str:
    """The kind of store or output at `path` (see the module's docstring); never raises for an
    unreadable file inside it (a damaged store keeps its kind)."""
    p = Path(path)
    if not p.exists():
        return "unknown" if p.is_symlink() else "empty"  # a dangling link is not ours to follow
    if not p.is_dir():
        return "unknown"
    names = {c.name for c in p.iterdir()}
    if all(n.startswith(".") and ".tmp-" in n for n in names):  # nothing, or a first write in progress
        return "empty"
    if "zarr.json" in names and _attributes(p / "zarr.json").get("format") in (CUBE_FORMAT, CUBE_FORMAT_1):
        return "cube"
    if is_results(p, names):
        return "results"
    if "config.json" in names:
        return _model_kind(p / "config.json")
    if names & {"zarr.json", ".zgroup", ".zarray", ".zattrs"}:
        return "zarr"
    if FIGURES_MARKER in names or _only_figures(p, names):
        return "figures"
    visible = {n for n in names if not n.startswith(".")}
    if visible and visible <= _STUDY_ENTRIES:
        return "study"
    return "unknown"


def describe(kind: str, path: str | Path | None = None) -> str:
    """`kind` in words, for messages: "a scoring cube", "an existing file", ..."""
    if kind == "unknown":
        return "an existing file" if path is not None and Path(path).is_file() else \
            "a non-empty folder this toolkit did not write"
    return _WORDS[kind]


def is_results(p: Path, names: set[str] | None = None) -> bool:
    """True for a results store: its `current` link (even dangling), a version folder, or the older
    single-group layout (a zarr group whose variables include `plan` and `kind`)."""
    names = names if names is not None else {c.name for c in p.iterdir()}
    if "current" in names and (p / "current").is_symlink():
        return True
    for name in names:
        if name.startswith("v-") and ((p / name / ".manifest.json").exists() or _results_group(p / name)):
            return True
    return "zarr.json" in names and _results_group(p)


def _results_group(p: Path) -> bool:
    return all((p / part / "zarr.json").exists() for part in ("plan", "kind")) and (p / "zarr.json").exists()


def _attributes(zarr_json: Path) -> dict:
    try:
        return json.loads(zarr_json.read_text()).get("attributes") or {}
    except (OSError, ValueError, AttributeError):  # damaged or foreign: not a cube by its attributes
        return {}


def _model_kind(config_json: Path) -> str:
    """A Hugging Face model folder: quantized (a quantization config), dropped (drop lists or the
    dropped format's model_type; a block drop saved as a stock model carries
    `redundancy_block_drop`), or a checkpoint."""
    try:
        config = json.loads(config_json.read_text())
    except (OSError, ValueError):
        return "checkpoint"
    if not isinstance(config, dict):
        return "checkpoint"
    if config.get("quantization_config") or config.get("compression_config"):
        return "quantized"
    marks = {"drop_attn_list", "drop_mlp_list", "redundancy_block_drop"}  # drop/_materialize.py
    if marks & set(config) or config.get("model_type") == "redundancy_dropped":
        return "dropped"
    return "checkpoint"


def _only_figures(p: Path, names: set[str]) -> bool:
    """Figures written before the marker existed: a folder of nothing but PNG, PDF and SVG files."""
    visible = [p / n for n in names if not n.startswith(".")]
    return bool(visible) and all(f.suffix in _FIGURE_SUFFIXES and f.is_file() for f in visible)
