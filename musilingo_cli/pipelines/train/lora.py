"""`train --lora`: LoRA on the LLM (model/lora.py, through peft) trained together with the adapter.

The LoRA weights join the DeepSpeed engine (`engine._trainable_module` registers their small
lora_A / lora_B containers; the frozen LLM stays outside it), so ZeRO shards their optimizer
state, its checkpoint holds them for `--resume`, and `lora_state` reads their fp32 master copy
for our checkpoint, which writes them in PEFT's format under `lora/` (musilingo.json: "lora").
"""

from __future__ import annotations

import dataclasses

from musilingo_cli.core.errors import ConfigError
from musilingo_cli.model.lora import LLAMA_TARGETS, LORA_DIR, LoraSettings, apply_lora, lora_parameters
from musilingo_cli.pipelines.train.config import TrainConfig


def lora_settings(config: TrainConfig) -> LoraSettings | None:
    """The LoRA a run trains (None without --lora). Raises ConfigError for bad values."""
    if not config.lora:
        return None
    targets = config.lora_targets or LLAMA_TARGETS
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraSettings(config.lora_rank, config.lora_alpha, config.lora_dropout, tuple(targets))


def check_init(config: TrainConfig, base) -> None:
    """An --init checkpoint that carries LoRA weights cannot seed a run yet: say so, not drop them."""
    if base is not None and base.lora:
        raise ConfigError(
            f"--init {config.init}: this checkpoint has LoRA weights, which a new run cannot start "
            "from yet; run `musilingo export --merge` on it and pass the merged folder as --init"
        )


def add_lora(model, config: TrainConfig) -> None:
    """Wrap `model.llm` with trainable LoRA (seeded by --seed) and name it in the model's config."""
    settings = lora_settings(config)
    if settings is None:
        return
    model.llm = apply_lora(model.llm, settings, seed=config.seed + 1)
    for name, module in model.llm.named_modules():  # the frozen LLM stays in eval mode; LoRA's dropout trains
        if name.endswith("lora_dropout"):
            module.train()
    model.config = dataclasses.replace(model.config, lora=LORA_DIR)


def lora_state(engine, model) -> dict | None:
    """The full fp32 LoRA weights (ZeRO's master copy), by PEFT parameter name, gathered on every
    rank (collective); None when the run has no LoRA."""
    from deepspeed.utils import safe_get_full_fp32_param

    params = lora_parameters(model.llm)
    if not params:
        return None
    state = {}
    for name, param in params.items():
        full = safe_get_full_fp32_param(param)
        state[name] = (full if full is not None else param).detach().cpu().float().reshape(param.shape)
    return state
