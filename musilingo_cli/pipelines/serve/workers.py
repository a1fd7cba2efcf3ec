"""The server's worker threads: the encoder threads (all requests' clips, a batch at a time), the relay
of decoding events to the event loop, and the decoding of one audio part (run in a thread pool)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import tempfile
import threading
import time
from pathlib import Path

from musilingo_cli.core.errors import AudioError
from musilingo_cli.data.batching import Clip, encode_clips, min_samples, prepare_clip
from musilingo_cli.model.audio import duration_seconds
from musilingo_cli.model.live_batch import Event
from musilingo_cli.pipelines.serve.protocol import APIError, AudioSource


class EncoderWorker:
    """`threads` threads that encode clips for all requests, a batch (`batch_size` chunks) at a time:
    whatever waits is encoded together (equal-length chunks in one batch, as ask does), and each
    request hears its features as soon as its batch is done, so the first requests of a burst
    decode while the encoder works on the next. While requests announced by `expect` are still
    decoding their audio and the batch is not full, it waits up to GATHER_SECONDS for them."""

    GATHER_SECONDS = 0.25

    def __init__(self, model, batch_size: int = 8, threads: int = 1):
        self.model, self.batch_size = model, max(1, batch_size)
        self._queue: queue.Queue = queue.Queue()
        self._expected = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"musilingo-encode-{k}", daemon=True)
            for k in range(max(1, threads))
        ]
        for thread in self._threads:
            thread.start()

    def expect(self, change: int) -> None:
        """+1 when a request starts decoding audio, -1 when it submits (or fails)."""
        with self._lock:
            self._expected += change

    def submit(self, clips: list[Clip], announced: bool = False) -> concurrent.futures.Future:
        """Features for `clips` (a future); `announced`: this request called expect(+1) before."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._expected -= 1 if announced else 0
            if clips:
                self._queue.put((clips, future))
            else:
                future.set_result([])
        return future

    def close(self) -> None:
        self._queue.put(None)  # each thread puts it back for the next
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        pending: list[tuple[list[Clip], concurrent.futures.Future]] = []
        while True:
            if not pending:
                item = self._queue.get()
                if item is None:
                    self._queue.put(None)
                    return
                pending.append(item)
            self._gather(pending)
            batch, chunks = [], 0
            while pending and (not batch or chunks + _chunks(pending[0][0]) <= self.batch_size):
                chunks += _chunks(pending[0][0])
                batch.append(pending.pop(0))
            clips = [c for clips, _ in batch for c in clips]
            try:
                features = iter(encode_clips(self.model.encode, clips, self.batch_size))
                for clips_, future in batch:
                    future.set_result([next(features) for _ in clips_])
            except Exception as err:  # every request of the batch hears it; the thread goes on
                for _, future in batch:
                    future.set_exception(err)

    def _gather(self, pending: list) -> None:
        """Add queued requests to `pending` until a batch is full, waiting while others still decode."""
        deadline = time.monotonic() + self.GATHER_SECONDS
        while sum(_chunks(clips) for clips, _ in pending) < self.batch_size:
            gather = self._expected > 0 and time.monotonic() < deadline
            try:
                more = self._queue.get(timeout=0.01) if gather else self._queue.get_nowait()
            except queue.Empty:
                if gather:
                    continue  # others are still decoding: look again (they may finish or fail)
                return
            if more is None:
                self._queue.put(None)  # closing: what is pending is encoded first
                return
            pending.append(more)


def _chunks(clips: list[Clip]) -> int:
    return sum(len(c.chunks) for c in clips)


class Arrivals:
    """How many requests are between their body and the engine (audio being decoded or encoded):
    the engine's `coming`. Changed on the event loop only; read from the decoding thread."""

    def __init__(self):
        self._n = 0

    def count(self) -> int:
        return self._n

    def __enter__(self) -> Arrivals:
        self._n += 1
        return self

    def __exit__(self, *exc) -> None:
        self._n -= 1


class EventRelay:
    """Hands engine events to the event loop: every request's events of one decoding step are put
    in their queues by one callback, so the loop is woken once per step rather than once per row
    (each wake-up is a write to its self-pipe, from the decoding thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._pending: list[tuple[asyncio.Queue, Event]] = []
        self._lock = threading.Lock()

    def send(self, events: asyncio.Queue, event: Event) -> None:
        """Called from the decoding thread; never blocks on the loop."""
        with self._lock:
            self._pending.append((events, event))
            wake = len(self._pending) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for events, event in pending:
            events.put_nowait(event)


def decode_source(source: AudioSource, model, chunk_seconds: float, max_audio_seconds: float) -> Clip:
    """Decode one audio part as `ask` decodes a file (runs in a worker thread)."""
    with tempfile.TemporaryDirectory(prefix="musilingo-serve-") as scratch:
        path = source.path
        if path is None:
            path = Path(scratch) / f"audio{source.suffix}"
            path.write_bytes(source.data)
        try:
            seconds = duration_seconds(path)
            if seconds > max_audio_seconds:
                raise APIError(
                    413,
                    f"{source.where}: {seconds:.1f} s of audio, more than this server's "
                    f"--max-audio-seconds {max_audio_seconds:g}; send a shorter clip",
                    code="audio_too_long",
                    param=source.where,
                )
            return prepare_clip(str(path), model.encoder.sample_rate, chunk_seconds, None, min_samples(model))
        except AudioError as err:
            text = str(err).replace(f"{path}: ", "").replace(str(path), "the audio")
            raise APIError(400, f"{source.where}: {text}", code="invalid_audio", param=source.where) from None
