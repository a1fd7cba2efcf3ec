"""The frozen LLM and its tokenizer: any Hugging Face causal LM (Vicuna v0/v1.5, Llama, Qwen,
...), loaded without remote code, frozen, with a pad token (the official code pads with EOS)."""

from __future__ import annotations

import torch

from musilingo_cli.core.errors import CheckpointError
from musilingo_cli.model.hub import resolve_dir

LLM_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """'bf16' | 'fp16' | 'fp32' (or a torch.dtype) -> torch.dtype."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise CheckpointError(f"unknown dtype {name!r}: use bf16, fp16 or fp32") from None


def load_tokenizer(name_or_path: str):
    """The LLM's tokenizer, with pad = eos when it has no pad token (as the official code)."""
    from transformers import AutoTokenizer

    directory = resolve_dir(name_or_path, "tokenizer", LLM_FILES)
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_llm(name_or_path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A frozen causal LM in eval mode (hub id or local directory; never remote code)."""
    from transformers import AutoModelForCausalLM

    directory = resolve_dir(name_or_path, "LLM", LLM_FILES)
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, trust_remote_code=False)
    except ValueError as err:
        raise CheckpointError(f"LLM {name_or_path!r} cannot be loaded as a causal LM without remote code ({str(err).splitlines()[0]})") from None
    return freeze(model.to(device))


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients, eval mode (dropout off): the frozen parts never train."""
    return model.eval().requires_grad_(False)
