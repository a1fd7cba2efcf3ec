"""Keeping the accelerator busy: decode ahead in threads, encode equal-length chunks together,
and group generation batches by length.

MERT must never see a padded clip (its group norm makes padded features differ), so long audio
is cut into chunks of `chunk_seconds`; every full chunk of every file in a window has the same
length and they go through the encoder together, while each file's shorter last chunk is
batched only with chunks of exactly its length. A file's features are its chunks' pooled
tokens concatenated in time order (30 s -> 7 tokens, so a 5-minute song -> 70 tokens).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from musilingo_cli.model.audio import chunk, crop, is_silent, load_audio
from musilingo_cli.core.errors import AudioError


@dataclass
class Clip:
    """A decoded file ready for the encoder: equal-length chunks (but the last) and its lengths."""

    chunks: list[np.ndarray]
    seconds_total: float
    seconds_used: float


def prepare_clip(path: str, sample_rate: int, chunk_seconds: float, max_seconds: float | None,
                 min_samples: int = 400) -> Clip:
    """Decode, downmix and resample `path`, keep the first `max_seconds`, cut it into chunks.

    Raises AudioError for anything the model cannot hear: undecodable, silent, or too short
    for the encoder's convolutions (`min_samples`).
    """
    wave = load_audio(path, sample_rate)
    total = len(wave) / sample_rate
    if max_seconds is not None:
        wave = crop(wave, sample_rate, max_seconds)
    if is_silent(wave):
        raise AudioError(f"{path}: silent audio (peak below -60 dBFS); nothing to describe")
    if len(wave) < min_samples:
        raise AudioError(f"{path}: too short ({len(wave) / sample_rate * 1000:.0f} ms); the encoder needs "
                         f"at least {min_samples / sample_rate * 1000:.0f} ms of audio")
    return Clip(chunk(wave, sample_rate, chunk_seconds), total, len(wave) / sample_rate)


def decode_ahead(paths: Iterable[str], load: Callable[[str], Clip], workers: int = 4,
                 ahead: int = 16) -> Iterator[tuple[str, Clip | Exception]]:
    """Yield (path, clip or the AudioError it raised) in order, decoding up to `ahead` files in
    `workers` threads while the caller works (soundfile, soxr and ffmpeg release the GIL).

    Closing the generator (or an exception in the caller) cancels what has not started yet.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    queue: collections.deque[tuple[str, Future]] = collections.deque()
    todo = iter(paths)
    try:
        while True:
            while len(queue) < max(1, ahead):
                path = next(todo, None)
                if path is None:
                    break
                queue.append((path, pool.submit(load, path)))
            if not queue:
                return
            path, future = queue.popleft()
            try:
                yield path, future.result()
            except AudioError as err:
                yield path, err
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def encode_equal_lengths(encode: Callable[[torch.Tensor], torch.Tensor], waves: list[np.ndarray],
                         batch_size: int) -> list[torch.Tensor]:
    """Features of each wave, in input order, encoded in batches of equal-length waves only (MERT
    never sees padding). `encode` maps [B, S] to [B, ...] features."""
    by_length: dict[int, list[int]] = collections.defaultdict(list)
    for i, wave in enumerate(waves):
        by_length[len(wave)].append(i)
    out: list[torch.Tensor | None] = [None] * len(waves)
    for where in by_length.values():
        for start in range(0, len(where), max(1, batch_size)):
            group = where[start:start + batch_size]
            batch = np.stack([waves[i] for i in group]).astype(np.float32, copy=False)
            for i, feats in zip(group, encode(torch.from_numpy(batch))):
                out[i] = feats
    return out


def encode_clips(encode: Callable[[torch.Tensor], torch.Tensor], clips: list[Clip], batch_size: int) -> list[torch.Tensor]:
    """Features of each clip: its chunks encoded with every equal-length chunk of the window, then
    concatenated in time ([sum T', D] or [L, sum T', D]; time is dim -2 in both layouts)."""
    pieces = [piece for clip in clips for piece in clip.chunks]
    feats = iter(f.cpu() for f in encode_equal_lengths(encode, pieces, batch_size))
    return [torch.cat([next(feats) for _ in clip.chunks], dim=-2) for clip in clips]


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most `batch_size`, sorted by length (less padding);
    the order inside the sort is stable, so equal lengths keep their input order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[k:k + batch_size] for k in range(0, len(order), max(1, batch_size))]
