"""The shapes the benchmarks build with random weights: full size (MERT-v1-330M and a Vicuna-7B-shaped
Llama, from their published config.json files) or the tests' tiny ones (tests/model_helpers.py)."""

from __future__ import annotations

from model_helpers import mert_config_dict
from transformers import LlamaConfig


def mert_config(full: bool) -> dict:
    """MERT's config.json: MERT-v1-330M (1024 wide, 24 layers) or the tests' toy width."""
    if not full:
        return mert_config_dict()
    return {
        **mert_config_dict(1024, 24),
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "conv_dim": [512] * 7,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
    }


def llama_config(full: bool, vocab_size: int = 0) -> LlamaConfig:
    """Vicuna-7B's shape (32 layers of 4096, vocabulary 32,001) or a 2-layer Llama of width 64 over
    `vocab_size` tokens (the tokenizer's; unused at full size); bos 1, eos 2, no pad token, as Vicuna."""
    shape = (
        {"vocab_size": 32001, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32}
        | {"num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 2048}
        if full
        else {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
        | {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
    )
    return LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=None)
