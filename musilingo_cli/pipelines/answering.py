"""The work of `musilingo ask` once the items are known: windows of decoded files are checked
against the LLM's context and encoded in the encoder thread, then generated batch by batch in the
caller's thread, which writes every record (one writer for the output file). See pipelines/ask.py;
`config` below is its AskConfig and `writer` its Writer (not imported: ask.py imports this module).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from musilingo_cli.data.batching import (
    Clip,
    decode_ahead,
    encode_clips_safely,
    is_out_of_memory,
    length_batches,
    min_samples,
    prepare_clip,
)
from musilingo_cli.data.inputs import Item
from musilingo_cli.model.adapter import num_audio_tokens
from musilingo_cli.model.context import PromptTooLong, check_prompt, context_length, text_positions
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.model.structured import check_answer

# Items gathered before encoding and sorting into generation batches, per generation batch:
# a larger window pads less but holds more decoded audio.
WINDOW_BATCHES = 2
MAX_WINDOW_AUDIO_SECONDS = 4 * 3600  # ~1.4 GB of float32 at 24 kHz
READ_AHEAD_SECONDS = 4 * 3600  # decoded audio waiting for the encoder thread, at most (+ what workers decode)


def answer_all(model, todo: list[Item], config, settings: GenerationSettings, stamp: dict[str, Any], writer) -> None:
    """The encoder thread decodes ahead, checks prompts and encodes window after window; this thread
    generates and writes every record (so the output file has one writer)."""
    import torch

    by_source: dict[str, list[Item]] = {}
    for item in todo:
        by_source.setdefault(item.source, []).append(item)
    text = {q: text_positions(model, q) for q in {item.question for item in todo}}  # tokenizer: this thread only
    fit = _Fit(context_length(model.llm), text, settings.max_new_tokens, model)
    rate = model.encoder.sample_rate
    shortest = min_samples(model)

    def load(source: str) -> Clip:
        return prepare_clip(source, rate, config.chunk_seconds, config.max_seconds, shortest)

    per_window = config.batch_size * WINDOW_BATCHES
    decoded = decode_ahead(
        by_source,
        load,
        workers=config.workers,
        ahead=max(per_window, 2 * config.workers),
        ahead_seconds=READ_AHEAD_SECONDS,
    )
    # the encoder's large kernels fill the SMs that batched decoding leaves idle: its own CUDA stream
    stream = torch.cuda.Stream(config.device) if str(config.device).startswith("cuda") else None
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    worker = threading.Thread(
        target=_encode_all,
        name="encode",
        daemon=True,
        args=(model, decoded, by_source, fit, config, stamp, stream, ready, stop),
    )
    worker.start()
    try:
        while (message := ready.get())[0] != "done":
            kind, payload = message
            if kind == "raise":
                raise payload
            if kind == "records":
                for record, announce in payload:
                    writer.write(record, announce)
                writer.sync()
            else:
                _generate_window(model, *payload, config, settings, stamp, writer)
    finally:  # Ctrl-C or an error: no file waits to be decoded, and the encoder thread ends after its
        stop.set()  # current step (joined, so no torch call is cut off by the interpreter's exit)
        decoded.close()
        worker.join()


def _encode_all(
    model,
    decoded,
    by_source: dict[str, list[Item]],
    fit: _Fit,
    config,
    stamp: dict[str, Any],
    stream,
    ready: queue.Queue,
    stop: threading.Event,
) -> None:
    """The encoder thread: gather decoded files into windows, encode them, hand them over."""

    def put(message) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(message, timeout=0.1)
                return True
        return False

    try:
        for window, records in _windows(decoded, by_source, fit, config, stamp):
            if records and not put(("records", records)):
                return
            if window and not put(("window", _encode_window(model, window, config, stamp, stream))):
                return
        put(("done", None))
    except BaseException as err:  # noqa: BLE001 - handed to the main thread, which raises it
        put(("raise", err))
    finally:
        decoded.close()


class _Fit:
    """The prompt check for one run: audio tokens of a clip, and whether an item's prompt fits."""

    def __init__(self, limit: int | None, text: dict[str, int], max_new_tokens: int, model):
        self.limit, self.text, self.max_new_tokens = limit, text, max_new_tokens
        self.frames, self.window = model.encoder.frames, model.config.pool_window

    def tokens(self, clip: Clip) -> int:
        return sum(num_audio_tokens(self.frames(len(piece)), self.window) for piece in clip.chunks)

    def problem(self, item: Item, clip: Clip, tokens: int) -> str | None:
        try:
            check_prompt(self.limit, tokens, self.text[item.question], self.max_new_tokens, clip.seconds_used)
        except PromptTooLong as err:
            return str(err)
        return None


def _windows(
    decoded, by_source: dict[str, list[Item]], fit: _Fit, config, stamp: dict[str, Any]
) -> Iterator[tuple[list[tuple[list[Item], Clip]], list[tuple[dict, bool]]]]:
    """(window, error records): decoded files grouped into windows of about WINDOW_BATCHES generation
    batches (the first is one batch, so the accelerator starts sooner), with the records of files that
    failed to decode and of items whose prompt does not fit (those are never encoded)."""
    window: list[tuple[list[Item], Clip]] = []
    size, items, seconds = config.batch_size, 0, 0.0
    for source, clip in decoded:
        records = []
        if isinstance(clip, Exception):
            records = [
                (_record(item, stamp, error=_reason(clip, item)), k == 0) for k, item in enumerate(by_source[source])
            ]
            yield [], records
            continue
        tokens = fit.tokens(clip)
        fitting = []
        for item in by_source[source]:
            problem = fit.problem(item, clip, tokens)
            if problem:
                records.append((_record(item, stamp, error=problem, clip=clip, tokens=tokens), True))
            else:
                fitting.append(item)
        if records:
            yield [], records
        if not fitting:
            continue
        window.append((fitting, clip))
        items, seconds = items + len(fitting), seconds + clip.seconds_used
        if items >= size or seconds >= MAX_WINDOW_AUDIO_SECONDS:
            yield window, []
            window, size, items, seconds = [], config.batch_size * WINDOW_BATCHES, 0, 0.0
    if window:
        yield window, []


def _reason(err: BaseException, item: Item) -> str:
    """One line for an error record, without the path it starts with (the record's `audio` names the
    file); an unexpected exception is named by its type."""
    from musilingo_cli.core.errors import MusilingoError

    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, MusilingoError):
        text = f"{type(err).__name__}: {text}"
    for prefix in (item.source, item.audio):
        if text.startswith(prefix + ": "):
            return text[len(prefix) + 2 :]
    return text[:300]


def _empty_cache(err: BaseException) -> None:
    import torch

    if is_out_of_memory(err) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _encode_window(
    model, window: list[tuple[list[Item], Clip]], config, stamp: dict[str, Any], stream
) -> tuple[list, float, list]:
    """Encode the window's files together: (rows of (item, features, clip), seconds per row, error
    records of files the encoder failed on even alone)."""
    import torch

    from musilingo_cli.model.decoding import CAPTURE_LOCK

    started = time.perf_counter()
    clips = [clip for _, clip in window]
    with CAPTURE_LOCK, torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        features = encode_clips_safely(model.encode, clips, config.encoder_batch_size, on_retry=_empty_cache)
    for clip in clips:
        clip.chunks = []  # the waves are no longer needed: free them before generating
    rows, failed = [], []
    for (items, clip), feats in zip(window, features):
        if isinstance(feats, Exception):
            failed += [
                (_record(item, stamp, error=f"encoding failed: {_reason(feats, item)}", clip=clip), k == 0)
                for k, item in enumerate(items)
            ]
        else:
            rows += [(item, feats, clip) for item in items]
    return rows, (time.perf_counter() - started) / max(1, len(rows)), failed


def _generate_window(
    model,
    rows: list,
    encode_share: float,
    failed: list,
    config,
    settings: GenerationSettings,
    stamp: dict[str, Any],
    writer,
) -> None:
    """Generate batch after batch, sorted by length, and write each batch's records; a batch that
    fails is answered again item by item, so only the items that fail alone get error records."""
    for record, announce in failed:
        writer.write(record, announce)
    lengths = [f.shape[-2] + len(model.tokenizer(item.question).input_ids) for item, f, _ in rows]
    for batch in length_batches(lengths, config.batch_size):
        t0 = time.perf_counter()
        try:
            answers = _generate(model, [rows[k] for k in batch], settings, config)
        except Exception as err:  # noqa: BLE001 - retried one by one below
            _empty_cache(err)
            answers = []
            for k in batch:
                try:
                    answers += _generate(model, [rows[k]], settings, config)
                except Exception as alone:  # noqa: BLE001 - this item's record
                    _empty_cache(alone)
                    answers.append(alone)
        share = (time.perf_counter() - t0) / len(batch) + encode_share
        for k, answer in zip(batch, answers):
            item, feats, clip = rows[k]
            if isinstance(answer, Exception):
                error = f"generation failed: {_reason(answer, item)}"
                writer.write(_record(item, stamp, error=error, clip=clip, tokens=feats.shape[-2], seconds=share))
            else:
                record = _record(item, stamp, answer=answer, clip=clip, tokens=feats.shape[-2], seconds=share)
                if settings.json_schema is not None:  # --json-schema: the parsed, validated object (or why not)
                    record["json"], record["error"] = check_answer(answer, settings.json_schema)
                writer.write(record)
        writer.sync()


def _generate(model, rows: list, settings: GenerationSettings, config) -> list[str]:
    return model.generate(
        [f for _, f, _ in rows], [item.question for item, _, _ in rows], settings, compile=config.compile
    )


def _record(
    item: Item,
    stamp: dict[str, Any],
    answer: str | None = None,
    error: str | None = None,
    clip: Clip | None = None,
    tokens: int | None = None,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """One line of the output file (schema: docs/ask.md)."""
    record = {
        "id": item.id,
        "audio": item.audio,
        "question": item.question,
        "answer": answer,
        "error": error,
        "model": stamp["model"],
        "audio_seconds_total": round(clip.seconds_total, 3) if clip else None,
        "audio_seconds_used": round(clip.seconds_used, 3) if clip else None,
        "audio_tokens": tokens,
        "seconds": round(seconds, 4),
        "settings": stamp["settings"],
        "seed": stamp["seed"],
    }
    if item.extra:
        record["extra"] = item.extra
    return record
