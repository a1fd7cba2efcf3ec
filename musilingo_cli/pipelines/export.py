"""`musilingo export --merge`: a checkpoint trained with `train --lora` -> a checkpoint whose LLM
has the LoRA weights merged in (W + (alpha / rank) * B @ A, by peft's `merge_and_unload`), saved
with `save_pretrained` under `llm/` beside the same adapter. For users who want one plain model
(other tools, serving stacks without PEFT); musilingo itself loads the LoRA checkpoint directly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from musilingo_cli.core.console import stderr
from musilingo_cli.core.errors import ConfigError
from musilingo_cli.model.checkpoint import CONFIG_FILE, save_checkpoint
from musilingo_cli.model.llm import parse_dtype
from musilingo_cli.model.loader import load_llm_part, load_tokenizer_part, read_adapter, with_parts
from musilingo_cli.model.lora import merge_lora


def merge_export(model: str, out: str | Path, llm: str | None = None, dtype: str = "fp32") -> Path:
    """Write `model` (our checkpoint with LoRA) to `out` with the LoRA merged into `out/llm`.

    The LLM is merged in `dtype` (fp32 default: no rounding of the merged weights beyond the
    base model's). Raises ConfigError when `model` has no LoRA or `out` already holds a model
    (nothing is overwritten), CheckpointError when the parts cannot be read. Returns `out`."""
    out = Path(out)
    if (out / CONFIG_FILE).exists() or (out / "llm").exists():
        raise ConfigError(f"{out} already holds a model; choose an empty --out (nothing is overwritten)")
    config, state = read_adapter(model)
    if not config.lora:
        raise ConfigError(f"{model}: no LoRA weights to merge (musilingo.json names no 'lora'); it is usable as is")
    config = with_parts(config, None, llm)
    lm, tokenizer = load_llm_part(config.llm, "cpu", parse_dtype(dtype))
    lm = merge_lora(lm, config.lora)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer_part(config.tokenizer or config.llm)
    lm.save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    merged = dataclasses.replace(config, llm="llm", tokenizer=None, lora=None)
    save_checkpoint(out, merged, state, training={"merged_from": str(model), "lora": str(config.lora)})
    stderr.print(f"merged LoRA of {model} into {out / 'llm'}")
    return out
