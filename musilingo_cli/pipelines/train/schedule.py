"""The learning-rate schedule, a plain function of the optimizer step (so resuming at step N
gives exactly the rate an uninterrupted run had there; nothing to save).

Official `linear_warmup_cosine_lr`: linear warm-up from `warmup_lr` to `init_lr`, then cosine
down to `min_lr`. Two official quirks are not copied (docs/train.md): the official warm-up
used the step within the epoch and its cosine was computed over the whole run, so the rate
jumped down when warm-up ended; it also counted micro-batches, not optimizer steps. Here the
cosine starts at `init_lr` where warm-up ends and reaches `min_lr` at `total_steps`.
"""

from __future__ import annotations

import math


def warmup_cosine_lr(
    step: int, init_lr: float, min_lr: float, warmup_lr: float, warmup_steps: int, total_steps: int
) -> float:
    """The rate for optimizer step `step` (0-based: the rate used by the step's update)."""
    if step < warmup_steps:
        return warmup_lr + (init_lr - warmup_lr) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
