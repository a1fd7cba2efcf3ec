"""`musilingo chat`: a conversation about one audio file in the terminal (or through a pipe)."""

from __future__ import annotations

from typing import Optional

import typer


def command(
    audio: str = typer.Argument(..., help="The audio file to talk about."),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="Our checkpoint directory, an official .pth, or an official release (hub id or short / long / musicqa).",
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help="Audio encoder override: hub id or local directory (MERT)."
    ),
    llm: Optional[str] = typer.Option(None, "--llm", help="LLM override: hub id or local directory."),
    template: str = typer.Option(
        "default", "--template", help="default (the stage-2 prompt, as ask) or demo (the official demo's conversation)."
    ),
    preset: str = typer.Option(
        "official", "--preset", help="official (sampling, T=0.1, top_p=0.5, as the paper) or greedy (deterministic)."
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Most tokens per answer (default: 300, as the paper)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds sampling."),
    chunk_seconds: float = typer.Option(
        30.0, "--chunk-seconds", help="Long audio is encoded in chunks of this length (as ask)."
    ),
    max_seconds: Optional[float] = typer.Option(
        None, "--max-seconds", help="Use at most the first N seconds of each file."
    ),
    device: Optional[str] = typer.Option(
        None, "--device", help="cuda, cuda:1, cpu, ... (default: cuda when available)."
    ),
    dtype: Optional[str] = typer.Option(
        None, "--dtype", help="LLM precision: bf16, fp16 or fp32 (default: bf16 on cuda, fp32 on cpu)."
    ),
    encoder_dtype: Optional[str] = typer.Option(
        None, "--encoder-dtype", help="Encoder precision (default: as --dtype)."
    ),
) -> None:
    """Talk about a song: answers stream in; /audio FILE, /add FILE, /reset, /save FILE, /quit.

    With standard input not a terminal, each line is a question and each answer one line."""
    from musilingo_cli.pipelines.chat import ChatConfig, run

    run(
        ChatConfig(
            audio=audio,
            model=model,
            encoder=encoder,
            llm=llm,
            template=template,
            preset=preset,
            max_new_tokens=max_new_tokens,
            seed=seed,
            chunk_seconds=chunk_seconds,
            max_seconds=max_seconds,
            device=device,
            dtype=dtype,
            encoder_dtype=encoder_dtype,
        )
    )
