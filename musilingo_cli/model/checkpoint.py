"""Checkpoints: our format (a directory with `adapter.safetensors`, holding only the trained
tensors, and `musilingo.json`) and the official adapter-only `.pth` files. Which of these (or an
official release) a user's spec names is decided in `loader.py`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from musilingo_cli.model.config import ModelConfig
from musilingo_cli.core.errors import CheckpointError

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "musilingo.json"
OFFICIAL_PROJ = {"llama_proj.weight": "proj.weight", "llama_proj.bias": "proj.bias"}


def save_checkpoint(directory: str | Path, config: ModelConfig, state: dict[str, torch.Tensor],
                    training: dict[str, Any] | None = None) -> Path:
    """Write an adapter checkpoint; files are written under temporary names and renamed, so a
    crash never leaves a half-written checkpoint that looks complete."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    save_file(tensors, directory / f".{ADAPTER_FILE}.tmp", metadata={"format": "pt"})
    body = {**config.to_dict(), "training": training or {}}
    (directory / f".{CONFIG_FILE}.tmp").write_text(json.dumps(body, indent=2, ensure_ascii=False))
    os.replace(directory / f".{ADAPTER_FILE}.tmp", directory / ADAPTER_FILE)
    os.replace(directory / f".{CONFIG_FILE}.tmp", directory / CONFIG_FILE)
    return directory


def is_checkpoint(path: str | Path) -> bool:
    """True for a directory in our format."""
    return (Path(path) / CONFIG_FILE).is_file()


def read_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Our format -> (config, adapter state)."""
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
    return ModelConfig.from_dict(body), load_file(directory / ADAPTER_FILE)


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
