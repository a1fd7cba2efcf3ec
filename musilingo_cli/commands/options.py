"""Option conventions shared by the subcommands: one machine-output flag (`--json`, the same as
`--format json`), `-o/--output` for each command's main output, `-h/--help` everywhere."""

from __future__ import annotations

from typing import Optional

import typer

from musilingo_cli.core.errors import ConfigError

# The model and device options of the commands that load a model (ask, chat, serve): declared once,
# so their names, defaults and help read the same everywhere. Typer reads these as defaults.
MODEL: Optional[str] = typer.Option(
    None,
    "--model",
    help="Our checkpoint directory, an official .pth, or an official release (hub id or short / long / musicqa).",
)
ENCODER: Optional[str] = typer.Option(
    None, "--encoder", help="Audio encoder override: hub id or local directory (MERT)."
)
LLM: Optional[str] = typer.Option(None, "--llm", help="LLM override: hub id or local directory.")
DEVICE: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1, cpu, ... (default: cuda when available).")
DTYPE: Optional[str] = typer.Option(
    None, "--dtype", help="LLM precision: bf16, fp16 or fp32 (default: bf16 on cuda, fp32 on cpu)."
)
ENCODER_DTYPE: Optional[str] = typer.Option(None, "--encoder-dtype", help="Encoder precision (default: as --dtype).")
TEMPLATE: str = typer.Option(
    "default", "--template", help="default (the stage-2 prompt, as ask) or demo (the official demo's conversation)."
)
CHUNK_SECONDS: float = typer.Option(
    30.0, "--chunk-seconds", help="Long audio is encoded in chunks of this length (as ask)."
)


def output_format(value: str, choices: tuple[str, ...], as_json: bool = False) -> str:
    """The chosen `--format` (`json` when `--json` was given), checked against `choices`."""
    if as_json:
        if value not in (choices[0], "json"):
            raise ConfigError(f"--json and --format {value} disagree: pass one of them")
        return "json"
    if value not in choices:
        raise ConfigError(f"--format must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}")
    return value
