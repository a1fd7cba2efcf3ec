"""`musilingo train`: the two MusiLingo stages (and fine-tuning on users' data) with DeepSpeed.

    datasets -> (cache pass: frozen encoder -> pooled features on disk)
             -> seeded, rank-sharded micro-batches -> MusiLingo loss (adapter -> frozen LLM)
             -> DeepSpeed ZeRO engine over the adapter only -> checkpoints + metrics

Only the adapter (and the layer weights in "learned" mode) is given to DeepSpeed: the frozen
LLM stays outside the engine, so ZeRO never partitions, casts or saves it, and it is not in
the optimizer; it still passes gradients back to its inputs (the audio embeddings).

Everything that decides what a step sees is a function of (seed, epoch, position), and the LR
is a function of the step, so `resume` continues exactly: same data order, same crops, same
rates, and (with the optimizer state DeepSpeed restores) the same losses.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from rich.markup import escape

from musilingo_cli.core.console import stderr, warn
from musilingo_cli.core.errors import ConfigError, MusilingoError
from musilingo_cli.data.datasets import check_missing, load_examples
from musilingo_cli.pipelines.train.checkpoints import _resume, _save, resume_plan
from musilingo_cli.pipelines.train.config import TrainConfig, TrainResult, check_inputs
from musilingo_cli.pipelines.train.data_source import DataOrder, _feature_source
from musilingo_cli.pipelines.train.distributed import _barrier, _from_rank0, _reduce_mean, setup_distributed
from musilingo_cli.pipelines.train.engine import (
    _build_model,
    _engine,
    _set_lr,
    _zero_loss,
    _zero_stage,
    model_config_for,
)
from musilingo_cli.pipelines.train.metrics import _Logger


def run(config: TrainConfig) -> TrainResult:
    """Train the adapter as `config` says; write checkpoints, metrics.jsonl and loss.png under `out`."""
    dist_info = setup_distributed()
    out = Path(config.out)
    lock, tag = _claim_run_folder(out, config, dist_info)
    try:
        return _run(config, dist_info, out, tag)
    finally:
        if lock is not None:
            lock.release()


def _claim_run_folder(out: Path, config: TrainConfig, dist_info):
    """Rank 0 locks the run folder (a second training on it is refused) and decides, before any
    data or model is loaded, what to resume; every rank gets the same answer (a refusal raises on
    all ranks, so none waits at a barrier). Returns (the lock on rank 0, the tag to resume)."""
    outcome, lock = None, None
    if dist_info.rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = FileLock(out / ".musilingo-train.lock", timeout=0)
            try:
                lock.acquire()
            except Timeout:
                lock = None
                raise ConfigError(
                    f"{out} is in use by another training (it holds {out / '.musilingo-train.lock'}); "
                    "wait for it to finish or choose another --out"
                ) from None
            tag, warnings = resume_plan(out, config.resume, dist_info.world)
            for warning in warnings:
                stderr.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
            outcome = ("ok", tag)
        except MusilingoError as err:
            outcome = ("error", err)
        except OSError as err:
            outcome = ("error", ConfigError(f"{out}: cannot use this run folder ({err.strerror or err})"))
    outcome = _from_rank0(outcome, dist_info)
    if outcome[0] == "error":
        if lock is not None:
            lock.release()
        raise outcome[1]
    return lock, outcome[1]


def _run(config: TrainConfig, dist_info, out: Path, tag: str | None) -> TrainResult:
    rank0 = dist_info.rank == 0
    _seed_everything(config.seed + dist_info.rank)

    check_inputs(config)
    loaded = load_examples(config.data, config.audio_dir, config.format, config.split)
    check_missing(
        len(loaded.missing), loaded.total, config.max_missing_fraction, loaded.missing[0] if loaded.missing else None
    )
    model_config, init_state = model_config_for(config)  # after the data checks: it may download configs
    source = _feature_source(config, model_config, loaded.examples, dist_info)
    examples = source.examples
    skipped = loaded.total - len(examples)  # missing files + (cached runs) undecodable ones

    model = _build_model(config, model_config, init_state, dist_info, with_encoder=source.cache is None)
    if source.cache is None:
        source.model = model
    engine = _engine(config, model, dist_info)
    _seed_everything(config.seed + dist_info.rank)  # training randomness does not depend on cache hits
    order = DataOrder(len(examples), config.micro_batch, dist_info.rank, dist_info.world, config.seed)
    step = _resume(engine, order, out, tag, rank0) if tag else 0

    logger = _Logger(out, config, rank0, step)
    if rank0:
        stderr.print(
            f"training {_what_trains(engine.module)} on "
            f"{len(examples):,} examples ({skipped} skipped), {dist_info.world} process(es), "
            f"ZeRO-{_zero_stage(engine)}, {config.precision}; global batch "
            f"{config.micro_batch * config.grad_accum * dist_info.world}"
        )
        if config.max_steps <= config.warmup_steps:
            warn(
                f"the run ends inside the warm-up ({config.max_steps} steps, warm-up {config.warmup_steps}): the rate "
                f"never reaches --lr {config.lr:g}; pass a smaller --warmup-steps or a larger --max-steps"
            )
    last_loss = math.nan
    try:
        while step < config.max_steps:
            t0 = time.perf_counter()
            lr = _set_lr(engine, config, step)
            losses, samples = [], 0
            for _ in range(config.grad_accum):
                epoch, indices = order.next()
                feats, kept = source.features(epoch, indices)
                if not kept:  # a whole micro-batch of broken audio: keep the accumulation count
                    loss = _zero_loss(engine)
                else:
                    loss = engine(feats, [examples[i].question for i in kept], [examples[i].answer for i in kept])
                engine.backward(loss)
                engine.step()
                losses.append(float(loss.detach()))
                samples += len(kept)
            step += 1
            last_loss, samples = _reduce_mean(sum(losses) / len(losses), samples, dist_info)
            logger.log(step, last_loss, lr, samples / (time.perf_counter() - t0))
            if step % config.save_every == 0 or step == config.max_steps:
                _save(engine, model, config, out, step, order, rank0, last_loss)
    finally:
        logger.close()
    final = out / "final"
    if rank0:
        logger.plot()
        stderr.print(f"done: {step} steps, final adapter in {final}")
    _barrier()
    report = source.report
    return TrainResult(
        final,
        step,
        last_loss,
        len(examples),
        skipped + len(source.broken),
        report.hits if report else 0,
        report.encoded if report else 0,
    )


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _what_trains(module) -> str:
    """'18,496 adapter parameters', plus the LoRA weights' count when --lora trains them too."""
    adapter = sum(p.numel() for p in module.adapter.parameters() if p.requires_grad)
    lora = sum(p.numel() for p in module.lora.parameters() if p.requires_grad) if hasattr(module, "lora") else 0
    return f"{adapter:,} adapter parameters" + (f" and {lora:,} LoRA parameters" if lora else "")
