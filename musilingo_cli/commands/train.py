"""`musilingo train`: parse options into a TrainConfig and call musilingo_cli.pipelines.train.run."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import typer

from musilingo_cli.core.errors import require_extra
from musilingo_cli.pipelines.train.config import PRESETS, TrainConfig

_ENGINE = "Engine"
_DATA = "Data"
_OPT = "Optimisation"
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _default(name: str, on: str | None = None, off: str | None = None) -> str:
    """TrainConfig's default for a field, as --help shows it (so help and config cannot drift)."""
    value = _DEFAULTS[name]
    if isinstance(value, bool) and on is not None:
        return on if value else off
    return str(value)


def _from_preset(name: str) -> str:
    """'--preset': the default comes from the recipe; --help lists each recipe's values."""
    return "from --preset"


def _presets_help() -> str:
    """One line per official recipe, generated from PRESETS (steps, warm-up, rates, batch)."""
    rows = []
    for name, p in PRESETS.items():
        crops = p.get("crops_per_clip", _DEFAULTS["crops_per_clip"])
        rows.append(
            f"{name}: {p['max_steps']} steps, warm-up {p['warmup_steps']} (from {p['warmup_lr']:g}), lr {p['lr']:g} "
            f"-> {p['min_lr']:g}, micro-batch {p['micro_batch']} x accumulation {p['grad_accum']}, {crops} crops/clip"
        )
    return "; ".join(rows)


def command(
    stage: Optional[str] = typer.Option(
        None,
        "--stage",
        show_default=_default("stage"),
        help="pretrain (stage 1: captions, no prompt) or finetune (stage 2: Q&A).",
    ),
    data: Optional[list[str]] = typer.Option(
        None,
        "--data",
        help="Dataset file or folder (repeatable): LP-MusicCaps-MSD, MusicCaps CSV, Music Instruct JSON, MusicQA "
        "JSON, or JSONL {audio, question, answer}.",
        rich_help_panel=_DATA,
    ),
    audio_dir: Optional[str] = typer.Option(
        None,
        "--audio-dir",
        help="Folder holding the audio ({ytid}.*, MusicQA audio_name, MSD path).",
        rich_help_panel=_DATA,
    ),
    out: Optional[str] = typer.Option(
        None,
        "-o",
        "--output",
        "--out",
        show_default=_default("out"),
        help="Run folder: checkpoints/, deepspeed/, final/, metrics.jsonl, loss.png.",
    ),
    init: Optional[str] = typer.Option(
        None, "--init", help="Adapter checkpoint to start from (e.g. the pretrained one; ours or an official .pth)."
    ),
    encoder: Optional[str] = typer.Option(
        None,
        "--encoder",
        help="Audio encoder: hub id or local folder (default m-a-p/MERT-v1-330M), or a named pretrained encoder: "
        "musicnn-msd, musicnn-mtt.",
    ),
    llm: Optional[str] = typer.Option(
        None, "--llm", help="Frozen LLM: hub id or local folder (default lmsys/vicuna-7b-v1.5)."
    ),
    max_steps: Optional[int] = typer.Option(
        None,
        "--max-steps",
        show_default=_from_preset("max_steps"),
        help="Optimizer steps (each: micro-batch x accumulation x processes samples).",
    ),
    save_every: Optional[int] = typer.Option(
        None,
        "--save-every",
        show_default=_default("save_every"),
        help="Write a checkpoint every N optimizer steps (and at the end).",
    ),
    config_file: Optional[str] = typer.Option(
        None, "--config", help="YAML with any TrainConfig fields (flags override it)."
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        show_default="the --stage name",
        help="Official recipe (finetune = MI long); flags and --config override its values. " + _presets_help() + ".",
    ),
    resume: Optional[bool] = typer.Option(
        None, "--resume/--no-resume", help="Continue the run in --out from its latest checkpoint."
    ),
    resume_if_possible: Optional[bool] = typer.Option(
        None,
        "--resume-if-possible",
        help="Continue the run in --out if it has a checkpoint, else start it (one command for both).",
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", help="Force the dataset format: msd, musiccaps, mi, musicqa, jsonl.", rich_help_panel=_DATA
    ),
    split: Optional[str] = typer.Option(
        None,
        "--split",
        show_default=_default("split"),
        help="train, test or all; an MSD folder's split name.",
        rich_help_panel=_DATA,
    ),
    cache: Optional[bool] = typer.Option(
        None,
        "--cache/--no-cache",
        show_default=_default("cache", "--cache", "--no-cache"),
        help="Encode each clip once and train from cached features, or run the encoder in every step.",
        rich_help_panel=_DATA,
    ),
    cache_dir: Optional[str] = typer.Option(
        None,
        "--cache-dir",
        help="Feature cache folder, shareable between runs (default OUT/features).",
        rich_help_panel=_DATA,
    ),
    crops_per_clip: Optional[int] = typer.Option(
        None,
        "--crops-per-clip",
        show_default=_from_preset("crops_per_clip"),
        help="Random crops cached per clip for MSD/MusicQA.",
        rich_help_panel=_DATA,
    ),
    max_missing_fraction: Optional[float] = typer.Option(
        None,
        "--max-missing-fraction",
        show_default=_default("max_missing_fraction"),
        help="Stop if more than this fraction of the audio is missing or broken.",
        rich_help_panel=_DATA,
    ),
    micro_batch: Optional[int] = typer.Option(
        None,
        "--micro-batch",
        show_default=_from_preset("micro_batch"),
        help="Samples per process per forward pass.",
        rich_help_panel=_OPT,
    ),
    grad_accum: Optional[int] = typer.Option(
        None,
        "--grad-accum",
        show_default=_from_preset("grad_accum"),
        help="Micro-batches per optimizer step.",
        rich_help_panel=_OPT,
    ),
    lr: Optional[float] = typer.Option(
        None, "--lr", show_default=_from_preset("lr"), help="Peak learning rate (after warm-up).", rich_help_panel=_OPT
    ),
    warmup_steps: Optional[int] = typer.Option(
        None,
        "--warmup-steps",
        show_default=_from_preset("warmup_steps"),
        help="Optimizer steps of linear warm-up from the warm-up rate to --lr.",
        rich_help_panel=_OPT,
    ),
    seed: Optional[int] = typer.Option(
        None,
        "--seed",
        show_default=_default("seed"),
        help="Seed of data order, crops and initialisation.",
        rich_help_panel=_OPT,
    ),
    layer_combine: Optional[str] = typer.Option(
        None,
        "--layer-combine",
        show_default=_default("layer_combine"),
        help="mean (official code) or learned (softmax layer weights, trained).",
        rich_help_panel=_OPT,
    ),
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        show_default=_default("precision"),
        help="bf16, fp16 or fp32.",
        rich_help_panel=_ENGINE,
    ),
    zero_stage: Optional[int] = typer.Option(
        None,
        "--zero-stage",
        show_default=_default("zero_stage"),
        help="DeepSpeed ZeRO stage.",
        rich_help_panel=_ENGINE,
    ),
    deepspeed_config: Optional[str] = typer.Option(
        None,
        "--deepspeed-config",
        help="Your own DeepSpeed JSON (batch sizes and precision are filled in).",
        rich_help_panel=_ENGINE,
    ),
    gradient_checkpointing: Optional[bool] = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        show_default=_default("gradient_checkpointing", "on", "off"),
        help="Recompute LLM activations in the backward pass (less memory, slower).",
        rich_help_panel=_ENGINE,
    ),
    lora: Optional[bool] = typer.Option(
        None,
        "--lora/--no-lora",
        help="Also train LoRA weights on the LLM (peft), saved in PEFT's format under lora/.",
        rich_help_panel=_OPT,
    ),
    lora_rank: Optional[int] = typer.Option(
        None, "--lora-rank", help="LoRA rank r (default 16).", rich_help_panel=_OPT
    ),
    lora_alpha: Optional[float] = typer.Option(
        None, "--lora-alpha", help="LoRA alpha: the update is alpha/r * B@A (default 32).", rich_help_panel=_OPT
    ),
    lora_dropout: Optional[float] = typer.Option(
        None, "--lora-dropout", help="Dropout on the LoRA branch while training (default 0.05).", rich_help_panel=_OPT
    ),
    lora_targets: Optional[str] = typer.Option(
        None,
        "--lora-targets",
        help="Comma-separated linear layers to adapt (default: q,k,v,o,gate,up,down_proj).",
        rich_help_panel=_OPT,
    ),
    quantize: Optional[str] = typer.Option(
        None,
        "--quantize",
        help="Frozen LLM in 8bit or 4bit (NF4, bitsandbytes); with --lora, 4bit is QLoRA.",
        rich_help_panel=_ENGINE,
    ),
    compile: Optional[bool] = typer.Option(
        None,
        "--compile/--no-compile",
        show_default=_default("compile", "on", "off"),
        help="torch.compile the frozen LLM (fastest on GPUs; compiling takes a minute or two).",
        rich_help_panel=_ENGINE,
    ),
    local_rank: Optional[int] = typer.Option(
        None, "--local_rank", "--local-rank", hidden=True, help="Set by the deepspeed launcher."
    ),
) -> None:
    """Train the adapter (DeepSpeed ZeRO): --stage pretrain on LP-MusicCaps-MSD, --stage finetune on MI / MusicQA /
    MusicCaps or your own data."""
    require_extra("train", "deepspeed", what="musilingo train")
    # lazy: the training pipeline imports torch and DeepSpeed; `musilingo --help` must not
    from musilingo_cli.core.console import echo, results_only_on_stdout
    from musilingo_cli.model.hub import go_offline_if_unreachable
    from musilingo_cli.pipelines.train import check_inputs, resolve_config, run

    if local_rank is not None:  # the deepspeed launcher passes --local_rank=N (and usually LOCAL_RANK too)
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    overrides = dict(
        stage=stage,
        data=data or None,
        audio_dir=audio_dir,
        out=out,
        init=init,
        encoder=encoder,
        llm=llm,
        max_steps=max_steps,
        save_every=save_every,
        preset=preset,
        resume="auto" if resume_if_possible else resume,
        format=fmt,
        split=split,
        cache=cache,
        cache_dir=cache_dir,
        crops_per_clip=crops_per_clip,
        max_missing_fraction=max_missing_fraction,
        micro_batch=micro_batch,
        grad_accum=grad_accum,
        lr=lr,
        warmup_steps=warmup_steps,
        seed=seed,
        layer_combine=layer_combine,
        precision=precision,
        zero_stage=zero_stage,
        deepspeed_config=deepspeed_config,
        gradient_checkpointing=gradient_checkpointing,
        compile=compile,
        lora=lora,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=lora_targets.split(",") if lora_targets else None,
        quantize=quantize,
    )
    config = resolve_config(overrides, config_file)
    check_inputs(config)  # a typo in a local path is said before the hub is probed
    rank0 = int(os.environ.get("RANK", "0")) == 0
    go_offline_if_unreachable([config.encoder, config.llm, *([config.init] if config.init else [])], announce=rank0)
    with results_only_on_stdout():
        result = run(config)
    if rank0:
        echo(str(result.final))
