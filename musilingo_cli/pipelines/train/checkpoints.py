"""Checkpointing and resume: the DeepSpeed state (all ranks) with step and data position, each
rank's random state; our adapter checkpoint, train_config.yaml, `final/` and `deepspeed/latest`
(rank 0, atomically); pruning old DeepSpeed states; `resume_plan`, which picks the newest intact
state before anything is loaded; and `_resume`, which restores it (weights_only: no pickled code
runs) so a resumed run continues exactly."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from musilingo_cli.core.console import stderr
from musilingo_cli.core.errors import CheckpointError, ConfigError
from musilingo_cli.core.journal import atomic_dir, atomic_path, atomic_write_text
from musilingo_cli.model.checkpoint import save_checkpoint
from musilingo_cli.model.lora import save_lora
from musilingo_cli.pipelines.train.config import TrainConfig, config_yaml
from musilingo_cli.pipelines.train.data_source import DataOrder
from musilingo_cli.pipelines.train.distributed import _barrier
from musilingo_cli.pipelines.train.lora import lora_state

RNG_FILE = "rng_rank{rank}.pt"  # beside DeepSpeed's files in each deepspeed/step_N/


def _rng_state() -> dict[str, Any]:
    """This rank's random state: Python, NumPy, torch CPU and (when present) every CUDA device."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    """DeepSpeed state and this rank's random state (all ranks); then, once every rank's files are
    on disk, our adapter checkpoint, the resolved config, final/ and deepspeed/latest (rank 0).
    Every file of ours is written atomically (core.journal.atomic_path)."""
    import torch

    directory = out / "deepspeed"
    client = {"step": step, "epoch": order.epoch, "index": order.index}
    # `latest` is written below, by us, atomically and only after every rank saved
    engine.save_checkpoint(str(directory), tag=f"step_{step}", client_state=client, save_latest=False)
    with atomic_path(directory / f"step_{step}" / RNG_FILE.format(rank=engine.global_rank)) as tmp:
        torch.save(_rng_state(), tmp)
    state = adapter_state(engine)
    lora = lora_state(engine, model)
    _barrier()
    if rank0:
        training = {"step": step, "loss": loss, "stage": config.stage, "preset": config.preset, "data": config.data}
        if lora is not None:  # written before musilingo.json, which names it
            save_lora(model.llm, out / "checkpoints" / f"step_{step}" / model.config.lora, lora)
        target = save_checkpoint(out / "checkpoints" / f"step_{step}", model.config, state, training=training)
        atomic_write_text(target / "train_config.yaml", config_yaml(config))
        with atomic_dir(out / "final") as tmp:
            shutil.copytree(target, tmp, dirs_exist_ok=True)
        atomic_write_text(directory / "latest", f"step_{step}")
        _prune_deepspeed(directory, config.keep_deepspeed)
    _barrier()


def _tags(directory: Path) -> list[Path]:
    """deepspeed/step_N folders, oldest first."""
    tags = [p for p in directory.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(tags, key=lambda p: int(p.name[5:]))


def _prune_deepspeed(directory: Path, keep: int) -> None:
    for old in _tags(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


# --- loading without running code -----------------------------------------------------------------------------


def _safe_globals() -> list:
    """The few non-tensor types DeepSpeed's checkpoint files hold (plain data classes, found by
    loading ZeRO-0..3 states of fp32/bf16 runs), allowed for weights_only loading."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str | Path, map_location=None) -> Any:
    """torch.load with weights_only=True (pickled code never runs; only tensors, containers,
    primitives and `_safe_globals()` are rebuilt). Raises CheckpointError for any unreadable file
    (empty, cut short, not a torch file, or holding other objects); never EOFError."""
    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # EOFError, UnpicklingError, RuntimeError (bad zip), OSError, ...
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint file ({text[:200]})") from None


def _damage(tag: Path, world: int) -> str | None:
    """Why the DeepSpeed state `tag` cannot be resumed (a file missing, empty, cut short or holding
    code), or None when every file loads safely."""
    if not any(tag.glob("*model_states.pt")):  # mp_rank_00_... (ZeRO 0-2) or zero_pp_rank_0_mp_rank_00_... (ZeRO-3)
        return "its model states file is missing"
    for path in [tag / RNG_FILE.format(rank=r) for r in range(world)]:
        if not path.is_file():
            return f"{path.name} is missing (saved by an older version or by fewer processes)"
    for path in sorted(tag.glob("*.pt")):
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        try:
            safe_load(path, map_location="cpu")
        except CheckpointError as err:
            return str(err).removeprefix(f"{path}: ")[:300] + f" ({path.name})"
    return None


def resume_plan(out: Path, resume: bool | str, world: int) -> tuple[str | None, list[str]]:
    """Rank 0, before any data or model is loaded: the DeepSpeed tag to resume (None: start a new
    run) and warnings naming damaged newer states. Raises ConfigError when the run folder holds a
    run and resume is off, or when --resume finds nothing to resume; CheckpointError when no
    saved state is intact."""
    directory = out / "deepspeed"
    tags = _tags(directory)
    if not resume:
        if tags or (directory / "latest").exists():
            raise ConfigError(
                f"{out} already holds a training run; pass --resume (or --resume-if-possible) to continue it "
                "or choose another --out"
            )
        return None, []
    if not tags:
        if resume == "auto":
            return None, []
        raise ConfigError(
            f"--resume: nothing to resume in {out} (no DeepSpeed state under {directory}); "
            "start without --resume, or use --resume-if-possible"
        )
    warnings = []
    for tag in reversed(tags):
        problem = _damage(tag, world)
        if problem is None:
            return tag.name, warnings
        warnings.append(f"{tag} is damaged ({problem}); skipping it")
    raise CheckpointError(
        f"--resume: no intact DeepSpeed state in {directory}: {'; '.join(warnings)}. "
        "Delete the damaged step_* folders to start again from scratch"
    )


def _resume(engine, order: DataOrder, out: Path, tag: str, rank0: bool) -> int:
    """Load DeepSpeed state `tag` without running pickled code; restore step, data position and
    this rank's random state."""
    directory = out / "deepspeed"
    # DeepSpeed reads every file through its checkpoint engine's load(): make that one safe
    engine.checkpoint_engine.load = safe_load
    try:
        path, client = engine.load_checkpoint(
            str(directory), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
        )
    except CheckpointError:
        raise
    except Exception as err:  # never let e.g. EOFError escape: click would report it as Ctrl-C
        text = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise CheckpointError(f"--resume: DeepSpeed could not load {directory / tag} ({text})") from None
    if path is None or client is None:
        raise CheckpointError(f"--resume: {directory / tag} could not be loaded by DeepSpeed")
    order.epoch, order.index = client["epoch"], client["index"]
    _set_rng_state(safe_load(directory / tag / RNG_FILE.format(rank=engine.global_rank)))
    if rank0:
        stderr.print(f"resumed from {directory / tag} at step {client['step']}", soft_wrap=True)
    return int(client["step"])
