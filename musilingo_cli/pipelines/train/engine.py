"""The model and the DeepSpeed engine: the ModelConfig and start state (`--init`), the MusiLingo
built for training, the adapter-only module given to DeepSpeed, AdamW groups, the DeepSpeed JSON,
and the per-step learning rate set on the optimizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import ConfigError
from musilingo_cli.model.config import OFFICIAL_ENCODER, OFFICIAL_LLM, ModelConfig
from musilingo_cli.model.loader import assemble, encoder_info, read_adapter
from musilingo_cli.model.lora import lora_modules
from musilingo_cli.pipelines.train.config import TrainConfig
from musilingo_cli.pipelines.train.distributed import Dist
from musilingo_cli.pipelines.train.lora import add_lora, check_init
from musilingo_cli.pipelines.train.schedule import warmup_cosine_lr


def model_config_for(config: TrainConfig):
    """The ModelConfig to train and the adapter state to start from: --init (any spec the loader
    reads: our checkpoint, an official .pth or release) names the parts unless --encoder/--llm do."""
    base, state = None, None
    if config.init:
        base, state = read_adapter(config.init)
        check_init(config, base)
    encoder = config.encoder or (base.encoder if base else OFFICIAL_ENCODER)
    llm = config.llm or (base.llm if base else OFFICIAL_LLM)
    info = encoder_info(encoder)
    overrides = {
        "layer_combine": config.layer_combine,
        "pool_window": config.pool_window or info.pool_window,
        **({"max_txt_len": config.max_txt_len} if config.max_txt_len else {}),
        **({"tokenizer": base.tokenizer} if base and base.tokenizer and not config.llm else {}),
    }
    shapes = {"encoder_hidden_size": info.hidden_size, "num_hidden_states": info.num_hidden_states}
    return ModelConfig.for_stage(config.stage, encoder=encoder, llm=llm, **overrides, **shapes), state


def _trainable_module(model):
    """An nn.Module holding only the adapter, for DeepSpeed. The MusiLingo (with its frozen LLM)
    is kept as a plain attribute, so the engine never registers, casts, shards or saves it."""
    from torch import nn

    class TrainModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.adapter = model.adapter
            if model.config.lora:  # train --lora: only the LoRA containers, never the frozen LLM
                self.lora = lora_modules(model.llm)
            object.__setattr__(self, "musilingo", model)

        def forward(self, features, questions, answers):
            return self.musilingo(features, questions, answers)

    return TrainModule()


def param_groups(module, weight_decay: float) -> list[dict]:
    """AdamW groups as official: decay on weight matrices (ndim >= 2), none on biases and layer weights."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def deepspeed_config(config: TrainConfig, world: int) -> dict[str, Any]:
    """ZeRO-2 by default (or the user's JSON), with our batch sizes and precision filled in."""
    if config.deepspeed_config:
        try:
            ds = json.loads(Path(config.deepspeed_config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{config.deepspeed_config}: not a readable DeepSpeed JSON config ({err})") from None
    else:
        ds = {"zero_optimization": {"stage": config.zero_stage}}
    for key in ("train_batch_size", "scheduler", "optimizer"):
        if key in ds:
            raise ConfigError(
                f"{config.deepspeed_config}: remove '{key}'; musilingo sets the batch from "
                "micro_batch x grad_accum x GPUs and runs its own AdamW and LR schedule"
            )
    ds.update(
        train_micro_batch_size_per_gpu=config.micro_batch,
        gradient_accumulation_steps=config.grad_accum,
        gradient_clipping=config.grad_clip,
        zero_allow_untested_optimizer=True,
        steps_per_print=10**9,
        wall_clock_breakdown=False,
    )
    ds["train_batch_size"] = config.micro_batch * config.grad_accum * world
    ds.setdefault("bf16", {})["enabled"] = config.precision == "bf16"
    ds.setdefault("fp16", {})["enabled"] = config.precision == "fp16"
    return ds


def _build_model(config: TrainConfig, model_config, init_state, dist_info: Dist, with_encoder: bool):
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[config.precision]
    model = assemble(
        model_config,
        init_state,
        device=dist_info.device,
        dtype=dtype,
        encoder_dtype=config.encoder_dtype,
        with_encoder=with_encoder,
        quantize=config.quantize,
    )
    if init_state is None:
        # the same initial adapter whatever ran before (a cold cache pass builds the encoder and
        # draws from the global generator) and on every rank
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model.adapter.proj.reset_parameters()
    add_lora(model, config)
    if config.gradient_checkpointing:
        # HF only checkpoints in train mode; the LLM's weights stay frozen (Llama has no dropout)
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.llm.train()
    if config.compile:
        model.llm = torch.compile(model.llm, dynamic=True)  # rows are padded to each batch's longest
    return model


def _engine(config: TrainConfig, model, dist_info: Dist):
    import deepspeed
    import torch

    module = _trainable_module(model)
    optimizer = torch.optim.AdamW(param_groups(module, config.weight_decay), lr=config.lr, betas=config.betas, eps=1e-8)
    engine, *_ = deepspeed.initialize(
        model=module, optimizer=optimizer, config=deepspeed_config(config, dist_info.world)
    )
    return engine


def _zero_stage(engine) -> int:
    return int(engine.zero_optimization_stage())


def _base_optimizer(engine):
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt)


def _set_lr(engine, config: TrainConfig, step: int) -> float:
    lr = warmup_cosine_lr(step, config.lr, config.min_lr, config.warmup_lr, config.warmup_steps, config.max_steps)
    for group in _base_optimizer(engine).param_groups:
        group["lr"] = lr
    return lr


def _zero_loss(engine):
    """For a micro-batch whose audio was all unreadable: a real forward pass on one zero audio
    token with an empty answer, times 0. It changes nothing, but this rank still takes part in
    every collective of the forward and backward (ZeRO-3 gathers the adapter's weights there;
    a rank that skipped them would leave the others waiting)."""
    import torch

    config = engine.module.musilingo.config
    dtype = next(engine.module.parameters()).dtype
    if config.layer_combine == "mean":
        shape = (1, config.encoder_hidden_size)  # [T', D]
    else:
        shape = (config.num_hidden_states, 1, config.encoder_hidden_size)  # [L, T', D]
    features = torch.zeros(shape, dtype=dtype, device=engine.device)
    return engine([features], [""], [""]) * 0.0
