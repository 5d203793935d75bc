"""Options shared by several commands, declared once."""
from __future__ import annotations

from typing import Any, List, Optional

import typer

HUB = "Hub histories (hub:ORG/NAME and hub suites)"

DATASETS_HELP = ("calibration set: a name (`redundancy datasets`), a file or folder "
                 "(.jsonl .json .parquet .csv .txt), or hf:ORG/NAME[:CONFIG]:SPLIT[:FIELD]; "
                 "repeat for several")
TEXT_FIELD = typer.Option("text", help="the field holding the text in files and hub rows")
METRICS = typer.Option([], "--metric", help="metrics to store (repeat); default: importance, "
                       "importance_no_residual, angular_distance, relative_magnitude; exact ablation: "
                       "loss_delta, kl; first-order estimate: loss_delta_grad")
SEED = typer.Option(0, help="seed choosing the windows")
DEVICE = typer.Option("cpu", help="cpu, cuda, cuda:1, ...")
LAYERWISE = typer.Option(False, help="one decoder layer on the device at a time "
                         "(models larger than the device)")
EXECUTOR = typer.Option("local", help="local (this process) or ray (a task per checkpoint)")
WORKERS = typer.Option(None, help="with --executor ray: checkpoints scored at once (default: as many as the "
                       "CPUs or GPUs allow)")
OVERWRITE = typer.Option(False, help="replace an existing non-empty --out")

NAMES = "Step names (hub histories and local:DIR folders)"

# local:DIR takes these three too: how its folder names read (sources/_steps.py)
PRESET = typer.Option(None, help="a name from `redundancy list --help`'s presets: pythia, olmo, olmo2, "
                      "olmo3, smollm3, map-neo, tinyllama, ...; for local:DIR, how folder names read",
                      rich_help_panel=NAMES)
STAGE = typer.Option([], "--stage", help="training stages to keep (multi-stage histories; repeat)",
                     rich_help_panel=HUB)
PATTERN = typer.Option(None, help="regex with (?P<step>...) (and maybe (?P<tokens>...), (?P<stage>...)) "
                       "for branch or folder names no preset knows", rich_help_panel=NAMES)
TPS = typer.Option(None, "--tokens-per-step", help="tokens per step when names do not say",
                   rich_help_panel=NAMES)
EVERY = typer.Option(None, help="token grid, e.g. 500B: the checkpoint nearest each point",
                     rich_help_panel=HUB)
STEPS = typer.Option([], "--step", help="exact steps (repeat)", rich_help_panel=HUB)
MAXN = typer.Option(None, "--max", help="at most N checkpoints, evenly spread", rich_help_panel=HUB)
TOKEN = typer.Option(None, envvar="HF_TOKEN", help="hub token for gated or private repos",
                     rich_help_panel=HUB)
ENDPOINT = typer.Option(None, envvar="HF_ENDPOINT", hidden=True)
CACHE_DIR = typer.Option(None, help="hub cache (default: HF_HUB_CACHE)", rich_help_panel=HUB)
KEEP = typer.Option(False, help="keep each checkpoint in the hub cache after scoring",
                    rich_help_panel=HUB)
TOKENIZER = typer.Option(None, help="tokenizer repo or folder: for Megatron histories, and revisions "
                         "uploaded without one", rich_help_panel=HUB)


def hub_args(preset: Optional[str], pattern: Optional[str], tokens_per_step: Optional[float],
             every: Optional[str], steps: List[int], max_n: Optional[int], token: Optional[str],
             endpoint: Optional[str], stages: List[str]) -> dict[str, Any]:
    """The selection options of a hub history, as sources.open_series takes them (a local folder
    takes preset, pattern and tokens_per_step only: the others are refused there)."""
    return dict(preset=preset, pattern=pattern, tokens_per_step=tokens_per_step, every=every,
                steps=steps or None, max_n=max_n, token=token, endpoint=endpoint, stages=stages or None)
