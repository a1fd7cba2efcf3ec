"""`musilingo serve`: an OpenAI-compatible chat server about audio, with a web demo at `/`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from musilingo_cli.commands import options


def command(
    model: Optional[str] = options.MODEL,
    encoder: Optional[str] = options.ENCODER,
    llm: Optional[str] = options.LLM,
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on (default: this machine only; 0.0.0.0 opens it to the network).",
    ),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    preset: str = typer.Option(
        "official",
        "--preset",
        help="Decoding when a request sets no temperature: official (sampling, T=0.1, top_p=0.5) or greedy.",
    ),
    max_new_tokens: int = typer.Option(
        300, "--max-new-tokens", help="Most tokens per answer when a request sets no max_tokens."
    ),
    max_batch: Optional[int] = typer.Option(
        None, "--max-batch", help="Requests decoded together (default: 256 on cuda, 32 on cpu)."
    ),
    max_waiting: int = typer.Option(
        256, "--max-waiting", help="Requests queued beyond the batch; more get 503 (retry later)."
    ),
    template: str = options.TEMPLATE,
    max_audio_seconds: float = typer.Option(600.0, "--max-audio-seconds", help="Longer audio gets 413."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="Larger request bodies get 413."),
    chunk_seconds: float = options.CHUNK_SECONDS,
    allowed_local_media_path: Optional[Path] = typer.Option(
        None, "--allowed-local-media-path", help="Allow audio_url file:// paths below this directory (off by default)."
    ),
    api_key_file: Optional[Path] = typer.Option(
        None,
        "--api-key-file",
        help="File holding the bearer token clients must send (default: $MUSILINGO_API_KEY; none = no auth).",
    ),
    served_model_name: str = typer.Option("musilingo", "--served-model-name", help="The model id /v1/models lists."),
    device: Optional[str] = options.DEVICE,
    dtype: Optional[str] = options.DTYPE,
    encoder_dtype: Optional[str] = options.ENCODER_DTYPE,
) -> None:
    """Serve the OpenAI Chat Completions API with audio input (and a web demo at /)."""
    from musilingo_cli.pipelines.serve import ServeConfig, read_api_key, run

    run(
        ServeConfig(
            model=model,
            encoder=encoder,
            llm=llm,
            host=host,
            port=port,
            preset=preset,
            max_new_tokens=max_new_tokens,
            max_batch=max_batch,
            max_waiting=max_waiting,
            template=template,
            max_audio_seconds=max_audio_seconds,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            chunk_seconds=chunk_seconds,
            allowed_local_media_path=str(allowed_local_media_path) if allowed_local_media_path else None,
            api_key=read_api_key(api_key_file),
            served_model_name=served_model_name,
            device=device,
            dtype=dtype,
            encoder_dtype=encoder_dtype,
        )
    )
