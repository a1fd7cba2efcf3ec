"""The training configuration: the official recipes (PRESETS), `TrainConfig` (every field a run
reads; saved as train_config.yaml), `resolve_config` (preset < --config file < flags) and what a
finished run returns (`TrainResult`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import ConfigError, DataError

# Official recipes (reference: official-code.md section 3.5). The official scheduler counted
# micro-batches ("iterations"); ours counts optimizer steps, so warm-up and length are the
# official iteration counts divided by the accumulation (e.g. 3000 / 16 = 188).
PRESETS: dict[str, dict[str, Any]] = {
    "pretrain": dict(
        stage="pretrain",
        lr=1e-4,
        min_lr=8e-5,
        warmup_lr=1e-6,
        warmup_steps=5000,
        max_steps=20000,
        micro_batch=8,
        grad_accum=1,
        crops_per_clip=2,
    ),
    "finetune": dict(
        stage="finetune",
        lr=3e-5,
        min_lr=1e-5,
        warmup_lr=1e-6,
        warmup_steps=188,
        max_steps=1125,
        micro_batch=2,
        grad_accum=16,
    ),  # MI long: 6 epochs x 3000 iterations, warm-up 3000
    "finetune-mi-short": dict(
        stage="finetune",
        lr=3e-5,
        min_lr=1e-5,
        warmup_lr=1e-6,
        warmup_steps=157,
        max_steps=938,
        micro_batch=2,
        grad_accum=16,
    ),  # 6 x 2500, warm-up 2500
    "finetune-musicqa": dict(
        stage="finetune",
        lr=3e-5,
        min_lr=1e-5,
        warmup_lr=1e-6,
        warmup_steps=313,
        max_steps=1875,
        micro_batch=2,
        grad_accum=16,
    ),  # 6 x 5000, warm-up 5000
    "finetune-musiccaps": dict(
        stage="finetune",
        lr=3e-5,
        min_lr=1e-5,
        warmup_lr=1e-6,
        warmup_steps=125,
        max_steps=750,
        micro_batch=2,
        grad_accum=8,
    ),  # 6 x 1000, accumulation 8
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
    # LoRA on the LLM, trained with the adapter (pipelines/train/lora.py)
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_targets: list[str] | None = None  # default: Llama attention + MLP projections
    quantize: str | None = None  # 8bit | 4bit frozen LLM (bitsandbytes); 4bit + lora = QLoRA
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
    resume: bool | str = False  # True: continue the run in out; "auto": continue it if there is one
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        checks = [
            (self.stage in ("pretrain", "finetune"), f"stage must be pretrain or finetune, not {self.stage!r}"),
            (
                self.precision in ("bf16", "fp16", "fp32"),
                f"precision must be bf16, fp16 or fp32, not {self.precision!r}",
            ),
            (self.zero_stage in (0, 1, 2, 3), f"zero_stage must be 0-3, not {self.zero_stage}"),
            (
                self.max_steps > 0 and self.micro_batch > 0 and self.grad_accum > 0,
                "max_steps, micro_batch and grad_accum must be positive",
            ),
            (self.save_every > 0, "save_every must be positive"),
            (self.crops_per_clip > 0, "crops_per_clip must be positive"),
            (self.resume in (True, False, "auto"), f"resume must be true, false or auto, not {self.resume!r}"),
        ]
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


def check_inputs(config: TrainConfig) -> None:
    """Refuse missing local inputs before any model, data or hub is touched: no --data, a --data
    file, --audio-dir or --deepspeed-config that does not exist (ConfigError / DataError, one line)."""
    if not config.data:
        raise ConfigError("no training data: pass --data FILE (one or more) or set data: in --config")
    given = [("--data", path) for path in config.data] + [
        (option, path)
        for option, path in (("--audio-dir", config.audio_dir), ("--deepspeed-config", config.deepspeed_config))
        if path
    ]
    for option, path in given:
        if not Path(path).expanduser().exists():
            raise DataError(f"{option} {path}: no such file or folder; check the path")


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
