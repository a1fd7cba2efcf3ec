"""The frozen LLM and its tokenizer: any Hugging Face causal LM (Vicuna v0/v1.5, Llama, Qwen,
...), loaded without remote code, frozen, with a pad token (the official code pads with EOS)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from musilingo_cli.core.errors import CheckpointError, ConfigError
from musilingo_cli.model.hub import resolve_dir

LLM_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """'bf16' | 'fp16' | 'fp32' (or a torch.dtype) -> torch.dtype."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise CheckpointError(f"unknown dtype {name!r}: use bf16, fp16 or fp32") from None


# config.json model types of audio encoders (MERT, HuBERT and kin): given as --llm, --encoder was swapped
AUDIO_MODEL_TYPES = frozenset({"mert_model", "hubert", "wav2vec2", "wavlm", "data2vec-audio", "unispeech-sat"})


def _llm_dir(name_or_path: str, what: str) -> Path:
    """The resolved LLM directory; CheckpointError when its config.json describes an audio encoder."""
    directory = resolve_dir(name_or_path, what, LLM_FILES)
    try:
        model_type = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return directory  # no readable config: transformers says what is missing
    if model_type in AUDIO_MODEL_TYPES:
        raise CheckpointError(
            f"{directory} is an audio encoder ({model_type}), not a language model: did you swap --encoder and --llm?"
        )
    return directory


def load_tokenizer(name_or_path: str):
    """The LLM's tokenizer, with pad = eos when it has no pad token (as the official code)."""
    from transformers import AutoTokenizer

    directory = _llm_dir(name_or_path, "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


QUANTIZE = ("8bit", "4bit")


def quantization_config(quantize: str, compute_dtype: torch.dtype):
    """--quantize 8bit | 4bit -> transformers' BitsAndBytesConfig: LLM.int8() (Dettmers et al. 2022,
    arXiv:2208.07339; the official MusiLingo low-resource mode) or NF4 with double quantization
    (QLoRA, arXiv:2305.14314), computing in `compute_dtype`. bitsandbytes runs on CUDA and, since
    0.46, on CPU. Raises ConfigError for another value or when bitsandbytes is missing."""
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r}: use 8bit or 4bit (or leave it out for bf16/fp32)")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("--quantize needs bitsandbytes: pip install 'musilingo-cli[quantize]'")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_llm(
    name_or_path: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    quantize: str | None = None,
):
    """A frozen causal LM in eval mode (hub id or local directory; never remote code); `quantize`
    (8bit | 4bit) loads its linear layers through bitsandbytes, the rest in `dtype`."""
    from transformers import AutoModelForCausalLM

    directory = _llm_dir(name_or_path, "LLM")
    extra = {}
    if quantize:
        extra = {"quantization_config": quantization_config(quantize, dtype), "device_map": {"": str(device)}}
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, trust_remote_code=False, **extra)
    except ValueError as err:
        raise CheckpointError(
            f"LLM {name_or_path!r} cannot be loaded as a causal LM without remote code ({str(err).splitlines()[0]})"
        ) from None
    return freeze(model if quantize else model.to(device))


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients, eval mode (dropout off): the frozen parts never train."""
    return model.eval().requires_grad_(False)
