"""`musilingo chat`: a conversation about one audio file in the terminal (or through a pipe)."""

from __future__ import annotations

from typing import Optional

import typer

from musilingo_cli.commands import options


def command(
    audio: str = typer.Argument(..., help="The audio file to talk about."),
    model: Optional[str] = options.MODEL,
    encoder: Optional[str] = options.ENCODER,
    llm: Optional[str] = options.LLM,
    template: str = options.TEMPLATE,
    preset: str = typer.Option(
        "official", "--preset", help="official (sampling, T=0.1, top_p=0.5, as the paper) or greedy (deterministic)."
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Most tokens per answer (default: 300, as the paper)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds sampling."),
    chunk_seconds: float = options.CHUNK_SECONDS,
    max_seconds: Optional[float] = typer.Option(
        None, "--max-seconds", help="Use at most the first N seconds of each file."
    ),
    device: Optional[str] = options.DEVICE,
    dtype: Optional[str] = options.DTYPE,
    encoder_dtype: Optional[str] = options.ENCODER_DTYPE,
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
