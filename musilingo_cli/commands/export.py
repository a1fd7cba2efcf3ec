"""`musilingo export`: parse options and call musilingo_cli.pipelines.export."""

from __future__ import annotations

from typing import Optional

import typer


def command(
    model: str = typer.Argument(..., help="Our checkpoint folder trained with `train --lora`."),
    out: str = typer.Option(..., "--out", help="New folder for the merged model (must not hold a model)."),
    merge: bool = typer.Option(False, "--merge", help="Merge the LoRA weights into the LLM (written to OUT/llm)."),
    llm: Optional[str] = typer.Option(None, "--llm", help="The base LLM, if not the one the checkpoint names."),
    dtype: str = typer.Option("fp32", "--dtype", help="dtype of the merged LLM: fp32 (default), bf16 or fp16."),
) -> None:
    """Write a checkpoint trained with --lora as one plain model: the LoRA merged into the LLM (--merge)."""
    # lazy: the pipeline imports torch, transformers and peft; `musilingo --help` must not
    from musilingo_cli.core.console import stdout
    from musilingo_cli.core.errors import ConfigError
    from musilingo_cli.pipelines.export import merge_export

    if not merge:
        raise ConfigError("export writes a merged model: pass --merge")
    stdout.print(str(merge_export(model, out, llm=llm, dtype=dtype)))
