"""`redundancy convert`: a Megatron-LM checkpoint folder -> a Hugging Face Llama folder."""
from __future__ import annotations

from pathlib import Path

import typer

from . import _options as o
from ._app import command


@command()
def convert(checkpoint: Path = typer.Argument(..., help="one Megatron-LM checkpoint folder (iter_N/: "
                                              "mp_rank_*/ or torch_dist files)", callback=o.existing),
            tokenizer: str = typer.Option(..., help="tokenizer repo or folder (Megatron checkpoints "
                                          "carry none)"),
            out: Path = o.out("folder for the Hugging Face checkpoint"),
            overwrite: bool = o.OVERWRITE) -> None:
    """Convert a Megatron-LM GPT checkpoint (tensor- and pipeline-parallel ranks, or torch_dist) to a
    Hugging Face Llama folder with checkpoint.json (step, tokens seen); written atomically, never on
    or inside its input."""
    import json

    from ..sources._megatron import convert_megatron
    from ._console import console

    path = convert_megatron(checkpoint, tokenizer=tokenizer, out=out, overwrite=overwrite)
    meta = json.loads((path / "checkpoint.json").read_text())
    console.print(f"step {meta['step']}, {meta['tokens']} tokens seen -> {path}")
