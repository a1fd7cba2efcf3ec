"""The trainable part: layer combination, temporal compression and the linear projection.

Shapes: L hidden states, B clips, T encoder frames (75 Hz for MERT), T' = ceil(T / window)
audio tokens, D encoder width, H LLM width. Mean pooling and the projection are both linear,
so pooling first (as the official code does) costs T/window times less than projecting first.
"""

from __future__ import annotations

import torch
from torch import nn

from musilingo_cli.model.config import ModelConfig


def pool_time(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over consecutive windows of `window` frames along dim -2; the remainder (if any)
    is averaged into one more token, so [..., T, D] -> [..., ceil(T / window), D]."""
    t = x.shape[-2]
    full = t // window * window
    pieces = []
    if full:
        pieces.append(x[..., :full, :].unflatten(-2, (t // window, window)).mean(-2))
    if t > full:
        pieces.append(x[..., full:, :].mean(-2, keepdim=True))
    return torch.cat(pieces, dim=-2)


def num_audio_tokens(frames: int, window: int) -> int:
    """How many audio tokens `frames` encoder frames become (ceil division)."""
    return -(-frames // window)


class Adapter(nn.Module):
    """Pooled encoder features -> LLM input embeddings.

    Input is what the frozen side produces (and what the feature cache stores):
    [B, T', D] in "mean" mode, [B, L, T', D] in "learned" mode.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layer_combine = config.layer_combine
        if self.layer_combine == "learned":
            # zeros -> softmax gives the plain mean at initialisation (the official behaviour)
            self.layer_weights = nn.Parameter(torch.zeros(config.num_hidden_states))
        self.proj = nn.Linear(config.encoder_hidden_size, config.llm_hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.layer_combine == "learned":
            w = self.layer_weights.softmax(0).to(features.dtype)  # [L]
            features = torch.einsum("l,bltd->btd", w, features)  # [B, T', D]
        return self.proj(features.to(self.proj.weight.dtype))  # [B, T', H]


def combine_and_pool(hidden_states: tuple[torch.Tensor, ...], mode: str, window: int) -> torch.Tensor:
    """The frozen half of the adapter: L x [B, T, D] hidden states -> cacheable features.

    "mean": plain mean over all hidden states, then pooling -> [B, T', D] (official order).
    "learned": pooled per layer -> [B, L, T', D]; the adapter weighs the layers later.
    """
    stacked = torch.stack(hidden_states, dim=1)  # [B, L, T, D]
    if mode == "mean":
        return pool_time(stacked.mean(1), window)
    return pool_time(stacked, window)
