"""Checkpoints: our format (a directory with `adapter.safetensors`, holding only the trained
tensors, and `musilingo.json`) and the official adapter-only `.pth` files. Which of these (or an
official release) a user's spec names is decided in `loader.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from musilingo_cli.core.errors import CheckpointError
from musilingo_cli.core.journal import atomic_path, atomic_write_text
from musilingo_cli.model.config import ModelConfig

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "musilingo.json"
OFFICIAL_PROJ = {"llama_proj.weight": "proj.weight", "llama_proj.bias": "proj.bias"}


def save_checkpoint(
    directory: str | Path, config: ModelConfig, state: dict[str, torch.Tensor], training: dict[str, Any] | None = None
) -> Path:
    """Write an adapter checkpoint; each file is written under an unpredictable temporary name and
    renamed (`core.journal.atomic_path`), the config last, so a crash never leaves a half-written
    checkpoint that looks complete. An encoder, LLM or tokenizer given as a local folder is stored as
    its absolute path (a part inside the checkpoint folder stays relative to it), so
    `musilingo ask --model DIR` works from any working directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    body = {**config.to_dict(), "training": training or {}}
    for part in ("encoder", "llm", "tokenizer"):  # local folders: absolute, so the checkpoint works anywhere
        value = body.get(part)
        if isinstance(value, str) and value and not (directory / value).is_dir() and Path(value).expanduser().is_dir():
            body[part] = str(Path(value).expanduser().resolve())
    with atomic_path(directory / ADAPTER_FILE) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    atomic_write_text(directory / CONFIG_FILE, json.dumps(body, indent=2, ensure_ascii=False))
    return directory


def is_checkpoint(path: str | Path) -> bool:
    """True for a directory in our format."""
    return (Path(path) / CONFIG_FILE).is_file()


def read_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Our format -> (config, adapter state)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / ADAPTER_FILE).is_file():
        raise CheckpointError(f"{directory} has {CONFIG_FILE} but no {ADAPTER_FILE}: the checkpoint is incomplete")
    body = json.loads((directory / CONFIG_FILE).read_text())
    body.pop("training", None)
    for part in ("encoder", "llm", "tokenizer", "lora"):  # parts saved inside the checkpoint travel with it
        value = body.get(part)
        if value and not Path(value).is_absolute() and (directory / value).is_dir():
            body[part] = str(directory / value)
    try:
        state = load_file(directory / ADAPTER_FILE)
    except SafetensorError as err:  # a pickle or anything else renamed .safetensors, a cut-off file
        raise CheckpointError(
            f"{directory / ADAPTER_FILE}: not a safetensors file ({str(err).splitlines()[0]}); "
            "copy the checkpoint again, or write it with `musilingo train`"
        ) from None
    return ModelConfig.from_dict(body), state


def read_official_pth(path: str | Path) -> dict[str, torch.Tensor]:
    """An official `checkpoint_N.pth` -> adapter state. Loaded with weights_only=True (no pickle
    code runs); only the projection is taken (the file also holds rotary buffers)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a loadable official checkpoint ({str(err).splitlines()[0]})") from None
    model = blob.get("model", blob) if isinstance(blob, dict) else None
    missing = [k for k in OFFICIAL_PROJ if not isinstance(model, dict) or k not in model]
    if missing:
        raise CheckpointError(f"{path}: no {', '.join(missing)} under key 'model'; is this a MusiLingo checkpoint?")
    return {ours: model[theirs].float() for theirs, ours in OFFICIAL_PROJ.items()}
