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

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musilingo_cli.core.errors import CheckpointError, ConfigError, DataError

# Official recipes (reference: official-code.md section 3.5). The official scheduler counted
# micro-batches ("iterations"); ours counts optimizer steps, so warm-up and length are the
# official iteration counts divided by the accumulation (e.g. 3000 / 16 = 188).
PRESETS: dict[str, dict[str, Any]] = {
    "pretrain": dict(stage="pretrain", lr=1e-4, min_lr=8e-5, warmup_lr=1e-6, warmup_steps=5000, max_steps=20000,
                     micro_batch=8, grad_accum=1, crops_per_clip=2),
    "finetune": dict(stage="finetune", lr=3e-5, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=188, max_steps=1125,
                     micro_batch=2, grad_accum=16),  # MI long: 6 epochs x 3000 iterations, warm-up 3000
    "finetune-mi-short": dict(stage="finetune", lr=3e-5, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=157,
                              max_steps=938, micro_batch=2, grad_accum=16),  # 6 x 2500, warm-up 2500
    "finetune-musicqa": dict(stage="finetune", lr=3e-5, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=313,
                             max_steps=1875, micro_batch=2, grad_accum=16),  # 6 x 5000, warm-up 5000
    "finetune-musiccaps": dict(stage="finetune", lr=3e-5, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=125,
                               max_steps=750, micro_batch=2, grad_accum=8),  # 6 x 1000, accumulation 8
}


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as train_config.yaml beside each checkpoint."""

    stage: str = "finetune"
    preset: str | None = None  # defaults to the stage's name
    data: list[str] = field(default_factory=list)
    audio_dir: str | None = None
    format: str | None = None  # auto-detected per file
    split: str = "train"
    out: str = "runs/musilingo"
    init: str | None = None  # adapter checkpoint to start from (ours or an official .pth)
    encoder: str | None = None  # default: the init checkpoint's, else MERT-v1-330M
    llm: str | None = None  # default: the init checkpoint's, else Vicuna-7B v1.5
    layer_combine: str = "mean"
    pool_window: int | None = None  # default: the encoder's 4.33 s (325 frames for MERT)
    max_txt_len: int | None = None  # default: the stage's (32 / 160)
    # optimisation (defaults come from the preset)
    lr: float = 3e-5
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_steps: int = 188
    max_steps: int = 1125
    micro_batch: int = 2
    grad_accum: int = 16
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0  # 0 = none (as official)
    seed: int = 42
    # engine
    precision: str = "bf16"  # bf16 | fp16 | fp32
    zero_stage: int = 2
    deepspeed_config: str | None = None  # a user's own JSON; batch sizes and precision are filled in
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the frozen LLM (dynamic shapes): the fastest cached step on GPUs
    # features
    cache: bool = True
    cache_dir: str | None = None  # default: {out}/features
    crops_per_clip: int = 4
    encode_batch: int = 8
    encoder_dtype: str = "fp32"
    max_missing_fraction: float = 0.05
    # checkpoints and logging
    save_every: int = 1000
    keep_deepspeed: int = 2  # DeepSpeed states kept (adapter checkpoints are all kept)
    resume: bool = False
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        checks = [(self.stage in ("pretrain", "finetune"), f"stage must be pretrain or finetune, not {self.stage!r}"),
                  (self.precision in ("bf16", "fp16", "fp32"), f"precision must be bf16, fp16 or fp32, not {self.precision!r}"),
                  (self.zero_stage in (0, 1, 2, 3), f"zero_stage must be 0-3, not {self.zero_stage}"),
                  (self.max_steps > 0 and self.micro_batch > 0 and self.grad_accum > 0,
                   "max_steps, micro_batch and grad_accum must be positive"),
                  (self.save_every > 0, "save_every must be positive"),
                  (self.crops_per_clip > 0, "crops_per_clip must be positive")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def resolve_config(overrides: dict[str, Any], config_file: str | None = None) -> TrainConfig:
    """Preset < --config file < command-line flags (None means 'not given')."""
    file_values: dict[str, Any] = {}
    if config_file:
        import yaml

        try:
            file_values = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{config_file}: cannot read the training config ({str(err).splitlines()[0]})") from None
        if not isinstance(file_values, dict):
            raise ConfigError(f"{config_file}: expected a YAML mapping of TrainConfig fields")
    given = {k: v for k, v in overrides.items() if v is not None}
    stage = given.get("stage") or file_values.get("stage") or "finetune"
    preset = given.get("preset") or file_values.get("preset") or stage
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **file_values, **given, "preset": preset}
    if "stage" not in given and "stage" not in file_values:
        values["stage"] = PRESETS[preset]["stage"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; see docs/train.md for the fields")
    if isinstance(values.get("data"), str):
        values["data"] = [values["data"]]
    return TrainConfig(**values)


def config_yaml(config: TrainConfig) -> str:
    """The resolved config as YAML (what train_config.yaml holds)."""
    import yaml

    body = dataclasses.asdict(config)
    body["betas"] = list(body["betas"])
    return yaml.safe_dump(body, sort_keys=False)


@dataclass
class TrainResult:
    """What a finished run left behind."""

    final: Path
    steps: int
    last_loss: float
    examples: int
    skipped: int
    cache_hits: int = 0  # crops found in the feature cache
    encoded: int = 0  # crops the cache pass encoded (0: the encoder was never loaded)


# --- distributed set-up --------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: str


def setup_distributed() -> Dist:
    """Read RANK/WORLD_SIZE/LOCAL_RANK (torchrun, the deepspeed launcher, or a plain single
    process) and start the process group: NCCL on GPUs, gloo on CPU."""
    import torch

    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, default)
    os.environ.setdefault("MASTER_PORT", str(_free_port()) if os.environ["WORLD_SIZE"] == "1" else "29500")
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator().device_name()
    if accelerator == "cpu":
        # DeepSpeed's CPU backend JIT-compiles a shared-memory allreduce op (1-3 minutes) on
        # first use; gloo does the same work, and the adapter's gradients are tiny.
        import importlib

        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    local_rank = int(os.environ["LOCAL_RANK"])
    if accelerator == "cuda":
        torch.cuda.set_device(local_rank)
    deepspeed.init_distributed(dist_backend="gloo" if accelerator == "cpu" else None, verbose=False)
    device = "cpu" if accelerator == "cpu" else f"{accelerator}:{local_rank}"
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank, device)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# --- model ---------------------------------------------------------------------------------------


def model_config_for(config: TrainConfig):
    """The ModelConfig to train and the adapter state to start from (from --init, if given)."""
    from musilingo_cli.model.config import OFFICIAL_ENCODER, OFFICIAL_LLM, ModelConfig
    from musilingo_cli.model.encoder import describe_encoder

    base, state = {}, None
    if config.init:
        from musilingo_cli.model import release as official
        from musilingo_cli.model.checkpoint import is_checkpoint, read_checkpoint, read_official_pth

        if is_checkpoint(config.init):
            init_config, state = read_checkpoint(config.init)
            base = {"encoder": init_config.encoder, "llm": init_config.llm, "tokenizer": init_config.tokenizer}
        elif str(config.init).endswith(".pth") and Path(config.init).is_file():
            state = read_official_pth(config.init)
        elif official.is_release(config.init):  # e.g. --init short: its adapter, MERT and Vicuna
            release = official.open_release(config.init)
            state = {"proj." + k: v.float() for k, v in release.read("proj").items()}
            base = {"encoder": release.spec, "llm": release.spec}
        else:
            raise CheckpointError(f"--init {config.init}: not one of our checkpoint directories, an official .pth, "
                                  "nor an official release (short, long, musicqa)")
    encoder = config.encoder or base.get("encoder") or OFFICIAL_ENCODER
    llm = config.llm or base.get("llm") or OFFICIAL_LLM
    info = describe_encoder(encoder)
    overrides = {"layer_combine": config.layer_combine, "pool_window": config.pool_window or info.pool_window,
                 **({"max_txt_len": config.max_txt_len} if config.max_txt_len else {}),
                 **({"tokenizer": base["tokenizer"]} if base.get("tokenizer") and not config.llm else {})}
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
            raise ConfigError(f"{config.deepspeed_config}: remove '{key}'; musilingo sets the batch from "
                              "micro_batch x grad_accum x GPUs and runs its own AdamW and LR schedule")
    ds.update(train_micro_batch_size_per_gpu=config.micro_batch, gradient_accumulation_steps=config.grad_accum,
              gradient_clipping=config.grad_clip, zero_allow_untested_optimizer=True, steps_per_print=10 ** 9,
              wall_clock_breakdown=False)
    ds["train_batch_size"] = config.micro_batch * config.grad_accum * world
    ds.setdefault("bf16", {})["enabled"] = config.precision == "bf16"
    ds.setdefault("fp16", {})["enabled"] = config.precision == "fp16"
    return ds


# --- data order ------------------------------------------------------------------------------------


class DataOrder:
    """An endless, resumable stream of micro-batches: per epoch a permutation seeded by
    (seed, epoch), trimmed to a multiple of world x micro_batch and dealt out like
    DistributedSampler (rank r takes every world-th item). The position is (epoch, index)."""

    def __init__(self, n: int, micro_batch: int, rank: int, world: int, seed: int):
        self.n, self.micro, self.rank, self.world, self.seed = n, micro_batch, rank, world, seed
        self.per_epoch = n // (world * micro_batch)
        if self.per_epoch == 0:
            raise DataError(f"only {n} usable examples: fewer than micro_batch x processes = {world * micro_batch}")
        self.epoch, self.index = 0, 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _shard(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._cache = (epoch, perm[: self.per_epoch * self.world * self.micro][self.rank::self.world])
        return self._cache[1]

    def next(self) -> tuple[int, list[int]]:
        """(epoch, example indices) of the next micro-batch of this rank."""
        shard = self._shard(self.epoch)
        batch = shard[self.index * self.micro:(self.index + 1) * self.micro].tolist()
        epoch = self.epoch
        self.index += 1
        if self.index == self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return epoch, batch


class FeatureSource:
    """Micro-batch example indices -> per-item features: from the cache, or by decoding and
    encoding the audio in the loop (--no-cache; fresh random crops every epoch)."""

    def __init__(self, examples, cache=None, keys=None, model=None, seed: int = 0, sample_rate: int = 24000):
        self.examples, self.cache, self.keys, self.model = examples, cache, keys, model
        self.seed, self.rate = seed, sample_rate
        self.broken: set[int] = set()
        self.report = None  # the cache pass's CacheReport

    def features(self, epoch: int, indices: list[int]) -> tuple[list, list[int]]:
        """(features per kept item, kept indices); unreadable audio is skipped and remembered."""
        if self.cache is not None:
            feats = [self.cache.load(self.keys[i][epoch % len(self.keys[i])]) for i in indices]
            return feats, indices
        return self._encode(epoch, indices)

    def _encode(self, epoch: int, indices: list[int]):
        from musilingo_cli.model.audio import load_audio, random_crop
        from musilingo_cli.data.batching import encode_equal_lengths
        from musilingo_cli.core.errors import AudioError

        waves, kept = [], []
        for i in indices:
            ex = self.examples[i]
            try:
                wave = load_audio(ex.audio, self.rate)
            except AudioError:
                self.broken.add(i)
                continue
            if ex.crop_seconds is not None:
                wave = random_crop(wave, self.rate, ex.crop_seconds, np.random.default_rng([self.seed, epoch, i]), pad=False)
            waves.append(wave)
            kept.append(i)
        return encode_equal_lengths(self.model.encode, waves, batch_size=len(waves) or 1), kept


# --- the run -----------------------------------------------------------------------------------------


def run(config: TrainConfig) -> TrainResult:
    """Train the adapter as `config` says; write checkpoints, metrics.jsonl and loss.png under `out`."""
    from musilingo_cli.core.console import stderr

    dist_info = setup_distributed()
    rank0 = dist_info.rank == 0
    out = Path(config.out)
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        if not config.resume and (out / "deepspeed" / "latest").exists():
            raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    _seed_everything(config.seed + dist_info.rank)

    from musilingo_cli.data.datasets import check_missing, load_examples

    if not config.data:
        raise ConfigError("no training data: pass --data FILE (one or more) or set data: in --config")
    loaded = load_examples(config.data, config.audio_dir, config.format, config.split)
    check_missing(len(loaded.missing), loaded.total, config.max_missing_fraction,
                  loaded.missing[0] if loaded.missing else None)
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
    step = _resume(engine, order, out, config, rank0) if config.resume else 0

    logger = _Logger(out, config, rank0, step)
    if rank0:
        stderr.print(f"training {sum(p.numel() for p in engine.module.parameters()):,} adapter parameters on "
                     f"{len(examples):,} examples ({skipped} skipped), {dist_info.world} process(es), "
                     f"ZeRO-{_zero_stage(engine)}, {config.precision}; global batch "
                     f"{config.micro_batch * config.grad_accum * dist_info.world}")
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
    return TrainResult(final, step, last_loss, len(examples), skipped + len(source.broken),
                       report.hits if report else 0, report.encoded if report else 0)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _feature_source(config: TrainConfig, model_config, examples, dist_info: Dist) -> FeatureSource:
    """Run the cache pass (if caching) and return where features come from."""
    from musilingo_cli.data.datasets import check_missing

    from musilingo_cli.model.encoder import describe_encoder

    info = describe_encoder(model_config.encoder)
    rate, normalize = info.sample_rate, info.normalize
    if model_config.normalize_audio is not None:  # the model config overrides the preprocessor (as loading does)
        normalize = model_config.normalize_audio
    if not config.cache:
        return FeatureSource(examples, seed=config.seed, sample_rate=rate)
    from musilingo_cli.model.adapter import combine_and_pool
    from musilingo_cli.core.console import progress
    from musilingo_cli.model.encoder import ENCODER_FILES, load_encoder
    from musilingo_cli.data.feature_cache import FeatureCache, FeatureSpec, build_cache, encoder_fingerprint
    from musilingo_cli.model.hub import resolve_dir
    from musilingo_cli.model.llm import parse_dtype
    from musilingo_cli.model.named_encoders import named_encoder, named_encoder_fingerprint

    named = named_encoder(model_config.encoder)
    fingerprint = (named_encoder_fingerprint(named) if named
                   else encoder_fingerprint(resolve_dir(model_config.encoder, "audio encoder", ENCODER_FILES)))
    spec = FeatureSpec(fingerprint, rate, normalize, config.encoder_dtype, model_config.pool_window,
                       model_config.layer_combine)
    cache = FeatureCache(config.cache_dir or Path(config.out) / "features", spec, crop_seed=config.seed,
                         rank=dist_info.rank)

    def load():
        encoder = load_encoder(model_config.encoder, device=dist_info.device, dtype=parse_dtype(config.encoder_dtype))
        encoder.normalize = normalize
        return encoder

    def encode(encoder, waves):
        return combine_and_pool(encoder(waves), model_config.layer_combine, model_config.pool_window).float()

    with progress(transient=True) as bar:
        report = build_cache(examples, cache, config.crops_per_clip, load, encode, config.encode_batch,
                             dist_info.rank, dist_info.world, bar if dist_info.rank == 0 else None, _barrier)
    if dist_info.rank == 0:
        from musilingo_cli.core.console import stderr

        stderr.print(f"feature cache {cache.dir}: {report.hits} hits, {report.encoded} crops encoded"
                     f"{', encoder not loaded' if not report.encoder_loaded else ''}, {len(report.broken)} broken files")
    lost = len(examples) - len(report.keys)
    check_missing(lost, len(examples), config.max_missing_fraction, report.broken[0] if report.broken else None,
                  what="undecodable")
    keep = sorted(report.keys)
    source = FeatureSource([examples[i] for i in keep], cache=cache, keys=[report.keys[i] for i in keep],
                           seed=config.seed, sample_rate=rate)
    source.report = report
    return source


def _build_model(config: TrainConfig, model_config, init_state, dist_info: Dist, with_encoder: bool):
    import torch

    from musilingo_cli.model.loader import assemble

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[config.precision]
    model = assemble(model_config, init_state, device=dist_info.device, dtype=dtype,
                     encoder_dtype=config.encoder_dtype, with_encoder=with_encoder)
    if init_state is None:
        # the same initial adapter whatever ran before (a cold cache pass builds the encoder and
        # draws from the global generator) and on every rank
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model.adapter.proj.reset_parameters()
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
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=deepspeed_config(config, dist_info.world))
    return engine


def _zero_stage(engine) -> int:
    return int(engine.zero_optimization_stage())


def _base_optimizer(engine):
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt)


def _set_lr(engine, config: TrainConfig, step: int) -> float:
    from musilingo_cli.pipelines.train.schedule import warmup_cosine_lr

    lr = warmup_cosine_lr(step, config.lr, config.min_lr, config.warmup_lr, config.warmup_steps, config.max_steps)
    for group in _base_optimizer(engine).param_groups:
        group["lr"] = lr
    return lr


def _zero_loss(engine):
    return sum(p.sum() for p in engine.module.parameters()) * 0.0


def _reduce_mean(loss: float, samples: int, dist_info: Dist) -> tuple[float, int]:
    """Mean loss and total samples over all ranks (for logging only)."""
    import torch
    import torch.distributed as dist

    if dist_info.world == 1:
        return loss, samples
    t = torch.tensor([loss, float(samples)], dtype=torch.float64, device=dist_info.device)
    dist.all_reduce(t)
    return float(t[0]) / dist_info.world, int(t[1])


# --- checkpoints -------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state()}


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
    from musilingo_cli.model.checkpoint import save_checkpoint

    client = {"step": step, "epoch": order.epoch, "index": order.index, "rng": _rng_state()}
    engine.save_checkpoint(str(out / "deepspeed"), tag=f"step_{step}", client_state=client)
    state = adapter_state(engine)
    if rank0:
        training = {"step": step, "loss": loss, "stage": config.stage, "preset": config.preset, "data": config.data}
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
        from musilingo_cli.core.console import stderr

        stderr.print(f"resumed from {path} at step {client['step']}")
    return int(client["step"])


# --- logging -----------------------------------------------------------------------------------------


class _Logger:
    """Rank 0: rich progress (loss, lr, samples/s), metrics.jsonl, TensorBoard when installed."""

    def __init__(self, out: Path, config: TrainConfig, active: bool, start_step: int):
        self.active = active
        self.path = out / "metrics.jsonl"
        if not active:
            return
        from musilingo_cli.core.console import progress, stderr
        from musilingo_cli.core.journal import Journal, read_jsonl, rewrite_jsonl

        # a resumed run rewrites the steps after its checkpoint: keep only what came before
        rewrite_jsonl(self.path, [r for r in read_jsonl(self.path) if r["step"] <= start_step])
        self.journal = Journal(self.path, key=lambda r: str(r["step"]))
        self.start = time.time()
        self.tb = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                stderr.print("TensorBoard not installed (pip install tensorboard): logging to metrics.jsonl only")
        self.bar = progress()
        self.bar.start()
        self.task = self.bar.add_task("training", total=config.max_steps, completed=start_step, status="")

    def log(self, step: int, loss: float, lr: float, samples_per_s: float) -> None:
        if not self.active:
            return
        record = {"step": step, "loss": loss, "lr": lr, "samples_per_s": samples_per_s,
                  "time": round(time.time() - self.start, 3)}
        self.journal.append(record)
        if self.tb is not None:
            for name in ("loss", "lr", "samples_per_s"):
                self.tb.add_scalar(f"train/{name}", record[name], step)
        self.bar.update(self.task, completed=step, status=f"loss {loss:.4f}  lr {lr:.2e}  {samples_per_s:.1f} samples/s")

    def close(self) -> None:
        if not self.active:
            return
        self.bar.stop()
        self.journal.close()
        if self.tb is not None:
            self.tb.close()

    def plot(self) -> Path | None:
        """loss.png from metrics.jsonl (matplotlib, no display needed)."""
        from musilingo_cli.core.journal import read_jsonl

        records = read_jsonl(self.path)
        if not records:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1)
        ax.set(xlabel="optimizer step", ylabel="loss", title="musilingo train")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.path.with_name("loss.png"), dpi=120)
        plt.close(fig)
        return self.path.with_name("loss.png")
