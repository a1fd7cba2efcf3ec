"""Pretrained audio encoders that are not transformers models, by name: `--encoder musicnn-msd`.

The seam every encoder plugs into is what MusiLingo needs from one: waveforms [B, S] at its
sample rate -> a tuple of L per-layer hidden states [B, T, D] at its frame rate, and the number
of frames a clip of S samples gives. `FrameEncoder` wraps any module that does that, and a
`NamedEncoder` says how to build one and what it is (rate, frame rate, the pooling window that
matches MERT's 325 frames = 4.33 s, shapes, the files its weights come from). The loader, the
trainer's cache and `ask` consult `NAMED_ENCODERS` before treating a spec as a hub id or folder.

Registered:
    musicnn-msd   musicnn trained on the Million Song Dataset tags (PyPI wheel `musicnn`, ISC):
                  16 kHz, 62.5 frames/s, mid-end states cnn1..cnn3 (3 x 64), window 271 frames
    musicnn-mtt   the same network trained on MagnaTagATune tags
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from musilingo_cli.model import musicnn

MERT_WINDOW_SECONDS = 325 / 75  # MusiLingo's pooling window: 325 MERT frames at 75 Hz


@dataclass(frozen=True)
class NamedEncoder:
    """A pretrained encoder known by name.

    Attributes:
        name: the --encoder spec.
        sample_rate: input rate in Hz.
        frame_rate: hidden-state frames per second.
        hidden_size / num_hidden_states: D and L of the hidden states.
        pool_window: frames per audio token, MERT's 4.33 s at this frame rate.
        build: returns the frozen module (waves [B, S] -> L x [B, T, D]).
        frames: frames for a clip of S samples (0 if too short).
        weight_files: the files the weights are read from (they key the feature cache).
        normalize: per-clip zero-mean/unit-variance input (False: the network normalises itself).
    """

    name: str
    sample_rate: int
    frame_rate: float
    hidden_size: int
    num_hidden_states: int
    pool_window: int
    build: Callable[[], nn.Module]
    frames: Callable[[int], int]
    weight_files: Callable[[], list[Path]]
    normalize: bool = False


class FrameEncoder(nn.Module):
    """A frozen pretrained encoder behind the interface of model.encoder.AudioEncoder:
    waves [B, S] at `sample_rate` -> L x [B, T, D] hidden states; always in eval mode."""

    def __init__(self, spec: NamedEncoder, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.sample_rate = spec.sample_rate
        self.normalize = spec.normalize
        self.hidden_size = spec.hidden_size
        self.num_hidden_states = spec.num_hidden_states

    def train(self, mode: bool = True) -> FrameEncoder:
        """Stay in eval mode whatever the parent module does (batch norm keeps its statistics)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.normalize:
            waves = (waves - waves.mean(-1, keepdim=True)) / torch.sqrt(
                waves.var(-1, keepdim=True, unbiased=False) + 1e-7
            )
        param = next(self.model.parameters())
        return tuple(self.model(waves.to(param.device)))

    def frames(self, num_samples: int) -> int:
        """Encoder frames for a clip of `num_samples` samples."""
        return self.spec.frames(num_samples)


def _musicnn(name: str, variant: str) -> NamedEncoder:
    return NamedEncoder(
        name=name,
        sample_rate=musicnn.SAMPLE_RATE,
        frame_rate=musicnn.FRAME_RATE,
        hidden_size=musicnn.MIDEND,
        num_hidden_states=3,
        pool_window=musicnn.seconds_to_frames(MERT_WINDOW_SECONDS),
        build=lambda: musicnn.load_musicnn(variant),
        frames=musicnn.frames,
        weight_files=lambda: sorted(p for p in musicnn.checkpoint_dir(variant).iterdir() if p.name.startswith(".")),
    )


NAMED_ENCODERS: dict[str, NamedEncoder] = {
    spec.name: spec for spec in (_musicnn("musicnn-msd", "MSD_musicnn"), _musicnn("musicnn-mtt", "MTT_musicnn"))
}


def named_encoder(name: str | None) -> NamedEncoder | None:
    """The registered encoder called `name`, or None (then `name` is a hub id or folder)."""
    return NAMED_ENCODERS.get(str(name)) if name is not None else None


def load_named_encoder(
    spec: NamedEncoder, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> FrameEncoder:
    """Build `spec`'s module with its weights on `device` in `dtype` (spectral front ends compute in float32)."""
    return FrameEncoder(spec, spec.build().to(device=device, dtype=dtype))


def named_encoder_fingerprint(spec: NamedEncoder) -> str:
    """sha256 over the name, the shapes and the contents of the weight files: the feature cache's encoder key."""
    digest = hashlib.sha256(f"{spec.name}:{spec.sample_rate}:{spec.hidden_size}x{spec.num_hidden_states}".encode())
    for path in spec.weight_files():
        digest.update(path.name.encode() + b":" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
