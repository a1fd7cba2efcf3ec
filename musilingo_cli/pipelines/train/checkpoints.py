"""Checkpointing and resume: the DeepSpeed state (all ranks) with step, data position and random
state; our adapter checkpoint, train_config.yaml and `final/` (rank 0); pruning old DeepSpeed
states; and `_resume`, which restores all of it so a resumed run continues exactly."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from musilingo_cli.core.console import stderr
from musilingo_cli.core.errors import CheckpointError, ConfigError
from musilingo_cli.model.checkpoint import save_checkpoint
from musilingo_cli.model.lora import save_lora
from musilingo_cli.pipelines.train.config import TrainConfig, config_yaml
from musilingo_cli.pipelines.train.data_source import DataOrder
from musilingo_cli.pipelines.train.distributed import _barrier
from musilingo_cli.pipelines.train.lora import lora_state


def _rng_state() -> dict[str, Any]:
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def adapter_state(engine) -> dict[str, Any]:
    """The full fp32 adapter weights (ZeRO's master copy), gathered on every rank (collective)."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, param in engine.module.adapter.named_parameters():
        full = safe_get_full_fp32_param(param)
        if full is None:  # no ZeRO master copy (stage 0 in fp32): the parameter itself
            with deepspeed.zero.GatheredParameters([param]):
                full = param.detach().float().clone()
        state[name] = full.detach().cpu().float().reshape(param.ds_shape if hasattr(param, "ds_shape") else param.shape)
    return state


def _save(engine, model, config: TrainConfig, out: Path, step: int, order: DataOrder, rank0: bool, loss: float) -> None:
    """DeepSpeed state (all ranks) + our adapter checkpoint and resolved config (rank 0)."""
    client = {"step": step, "epoch": order.epoch, "index": order.index, "rng": _rng_state()}
    engine.save_checkpoint(str(out / "deepspeed"), tag=f"step_{step}", client_state=client)
    state = adapter_state(engine)
    lora = lora_state(engine, model)
    if rank0:
        training = {"step": step, "loss": loss, "stage": config.stage, "preset": config.preset, "data": config.data}
        if lora is not None:  # written before musilingo.json, which names it
            save_lora(model.llm, out / "checkpoints" / f"step_{step}" / model.config.lora, lora)
        target = save_checkpoint(out / "checkpoints" / f"step_{step}", model.config, state, training=training)
        (target / "train_config.yaml").write_text(config_yaml(config))
        final = out / "final"
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(target, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _prune_deepspeed(out / "deepspeed", config.keep_deepspeed)
    _barrier()


def _prune_deepspeed(directory: Path, keep: int) -> None:
    tags = sorted((p for p in directory.glob("step_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _resume(engine, order: DataOrder, out: Path, config: TrainConfig, rank0: bool) -> int:
    """Load the latest DeepSpeed state; restore step, data position and random state."""
    directory = out / "deepspeed"
    if not (directory / "latest").exists():
        raise ConfigError(f"--resume: no DeepSpeed checkpoint in {directory}; start without --resume")
    path, client = engine.load_checkpoint(str(directory), load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None or client is None:
        raise CheckpointError(f"--resume: {directory} could not be loaded by DeepSpeed")
    order.epoch, order.index = client["epoch"], client["index"]
    _set_rng_state(client["rng"])
    if rank0:
        stderr.print(f"resumed from {path} at step {client['step']}")
    return int(client["step"])
