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
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from musilingo_cli.core.errors import AudioError
from musilingo_cli.model.audio import chunk, is_silent, read_audio


@dataclass
class Clip:
    """A decoded file ready for the encoder: equal-length chunks (but the last) and its lengths."""

    chunks: list[np.ndarray]
    seconds_total: float
    seconds_used: float


def min_samples(model) -> int:
    """Fewest samples that give the encoder one frame (400 for MERT's convolutions); found by
    bisection once per model and remembered (it runs the encoder's length arithmetic)."""
    cached = model.__dict__.get("_min_samples")
    if cached is None:
        n = 1
        while model.encoder.frames(n) < 1 and n < 1 << 20:
            n *= 2
        lo, hi = n // 2, n
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if model.encoder.frames(mid) < 1 else (lo, mid)
        cached = model.__dict__["_min_samples"] = hi
    return cached


def prepare_clip(
    path: str, sample_rate: int, chunk_seconds: float, max_seconds: float | None, min_samples: int = 400
) -> Clip:
    """Decode, downmix and resample the first `max_seconds` of `path` (only those are decoded),
    cut them into chunks (views of one array that holds exactly the samples used).

    Raises AudioError for anything the model cannot hear: undecodable, truncated, silent, or too
    short for the encoder's convolutions (`min_samples`).
    """
    audio = read_audio(path, sample_rate, max_seconds)
    wave = audio.wave
    if is_silent(wave):
        raise AudioError(f"{path}: silent audio (peak below -60 dBFS); nothing to describe")
    if len(wave) < min_samples:
        raise AudioError(
            f"{path}: too short ({len(wave) / sample_rate * 1000:.0f} ms); the encoder needs "
            f"at least {min_samples / sample_rate * 1000:.0f} ms of audio"
        )
    return Clip(chunk(wave, sample_rate, chunk_seconds), audio.seconds_total, len(wave) / sample_rate)


def decode_ahead(
    paths: Iterable[str],
    load: Callable[[str], Clip],
    workers: int = 4,
    ahead: int = 16,
    ahead_seconds: float | None = None,
    cost: Callable[[Clip], float] = lambda clip: clip.seconds_used,
) -> ReadAhead:
    """(path, clip or the exception loading it raised) in order, decoded in `workers` threads while
    the caller works (soundfile, soxr and ffmpeg release the GIL): see ReadAhead."""
    return ReadAhead(paths, load, workers, ahead, ahead_seconds, cost)


class ReadAhead:
    """An iterator of (path, clip or exception), decoding ahead in a thread pool.

    Read-ahead stops at `ahead` files or, when given, once the decoded clips waiting for the caller
    hold `ahead_seconds` of audio (`cost`), whichever comes first; so at most `ahead_seconds` plus
    what the workers are decoding stays in memory. Any Exception of `load` (an OSError from a network
    mount, a MemoryError, a decoder library's own error) is yielded for that path and the rest go on;
    KeyboardInterrupt and SystemExit are not caught. `close` (from any thread) cancels what has not
    started, so Ctrl-C does not wait for the read-ahead.
    """

    def __init__(
        self,
        paths: Iterable[str],
        load: Callable[[str], Clip],
        workers: int,
        ahead: int,
        ahead_seconds: float | None,
        cost: Callable[[Clip], float],
    ):
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
        self._load, self._workers, self._ahead = load, max(1, workers), max(1, ahead)
        self._budget, self._cost = ahead_seconds, cost
        self._queue: collections.deque[tuple[str, Future]] = collections.deque()
        self._todo = iter(paths)
        self._lock = threading.RLock()
        self._running, self._held, self._open, self._left = 0, 0.0, True, True

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> tuple[str, Clip | Exception]:
        self._top_up()
        with self._lock:
            if not self._queue:
                self.close()
                raise StopIteration
            path, future = self._queue.popleft()
        try:
            clip = future.result()
        except Exception as err:  # noqa: BLE001 - one file's failure is that file's record
            return path, err
        with self._lock:
            self._held -= self._cost(clip)
        return path, clip

    def close(self) -> None:
        """Stop reading ahead: nothing new starts, what is queued is cancelled (thread-safe)."""
        with self._lock:
            self._open = False
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _finished(self, future: Future) -> None:
        with self._lock:
            self._running -= 1
            if not future.cancelled() and future.exception() is None:
                self._held += self._cost(future.result())
        self._top_up()

    def _top_up(self) -> None:
        with self._lock:
            while (
                self._open
                and self._left
                and self._running < self._workers
                and len(self._queue) < self._ahead
                and (self._budget is None or self._held < self._budget)
            ):
                path = next(self._todo, None)
                if path is None:
                    self._left = False
                    break
                self._running += 1
                future = self._pool.submit(self._load, path)
                self._queue.append((path, future))
                future.add_done_callback(self._finished)


def encode_equal_lengths(
    encode: Callable[[torch.Tensor], torch.Tensor], waves: list[np.ndarray], batch_size: int
) -> list[torch.Tensor]:
    """Features of each wave, in input order, encoded in batches of equal-length waves only (MERT
    never sees padding). `encode` maps [B, S] to [B, ...] features."""
    by_length: dict[int, list[int]] = collections.defaultdict(list)
    for i, wave in enumerate(waves):
        by_length[len(wave)].append(i)
    out: list[torch.Tensor | None] = [None] * len(waves)
    for where in by_length.values():
        for start in range(0, len(where), max(1, batch_size)):
            group = where[start : start + batch_size]
            batch = np.stack([waves[i] for i in group]).astype(np.float32, copy=False)
            for i, feats in zip(group, encode(torch.from_numpy(batch))):
                out[i] = feats
    return out


def encode_clips(
    encode: Callable[[torch.Tensor], torch.Tensor], clips: list[Clip], batch_size: int
) -> list[torch.Tensor]:
    """Features of each clip: its chunks encoded with every equal-length chunk of the window, then
    concatenated in time ([sum T', D] or [L, sum T', D]; time is dim -2 in both layouts)."""
    pieces = [piece for clip in clips for piece in clip.chunks]
    feats = iter(f.cpu() for f in encode_equal_lengths(encode, pieces, batch_size))
    return [torch.cat([next(feats) for _ in clip.chunks], dim=-2) for clip in clips]


# torch.OutOfMemoryError (torch >= 2.5), torch.cuda.OutOfMemoryError before it, and the host's MemoryError
_OUT_OF_MEMORY = tuple(
    {getattr(torch, "OutOfMemoryError", MemoryError), getattr(torch.cuda, "OutOfMemoryError", MemoryError), MemoryError}
)


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure on the accelerator or the host (or an older torch's RuntimeError saying so)."""
    return isinstance(err, _OUT_OF_MEMORY) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


def encode_clips_safely(
    encode: Callable[[torch.Tensor], torch.Tensor],
    clips: list[Clip],
    batch_size: int,
    on_retry: Callable[[BaseException], None] = lambda err: None,
) -> list[torch.Tensor | Exception]:
    """`encode_clips`, but one clip's failure is that clip's result (an Exception), never the window's.

    When encoding runs out of memory, the window is encoded again with half the batch size, down
    to 1 (`on_retry` is told, e.g. to empty the CUDA cache); when that or any other error remains,
    each clip is encoded alone and only the clips that still fail get their exception.
    """
    size = max(1, batch_size)
    while True:
        try:
            return list(encode_clips(encode, clips, size))
        except Exception as err:  # noqa: BLE001 - narrowed down below, clip by clip
            on_retry(err)
            if not is_out_of_memory(err) or size == 1:
                break
            size //= 2
    out: list[torch.Tensor | Exception] = []
    for clip in clips:
        try:
            out.append(encode_clips(encode, [clip], 1)[0])
        except Exception as err:  # noqa: BLE001 - this clip's record
            on_retry(err)
            out.append(err)
    return out


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most `batch_size`, sorted by length (less padding);
    the order inside the sort is stable, so equal lengths keep their input order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), max(1, batch_size))]
