"""The HTTP side of `musilingo serve` (FastAPI on uvicorn): routes, auth, limits, streaming.

A request's path through the server:

    body (<= max_body_bytes, else 413) -> ChatRequest (pydantic; 400 naming the field)
      -> each audio part decoded in a thread pool (soundfile/ffmpeg, soxr; 400 / 413 over
         max_audio_seconds), off the event loop
      -> encoded by the encoder thread, together with whatever else waits (EncoderWorker)
      -> the conversation rendered (pipelines.chat) -> the engine's waiting queue (503 when full)
      -> the decoding thread (model.live_batch.Engine) sends events back to the loop
      -> one JSON reply, or server-sent `chat.completion.chunk`s and `[DONE]`

A client that disconnects cancels its request: the engine drops its row before the next step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import queue
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from musilingo_cli.core.errors import AudioError, ConfigError
from musilingo_cli.data.batching import Clip, encode_clips, min_samples, prepare_clip
from musilingo_cli.model.audio import duration_seconds
from musilingo_cli.model.live_batch import Event, QueueFull
from musilingo_cli.model.live_batch import Request as Job
from musilingo_cli.pipelines.chat import Audio, Message, render
from musilingo_cli.pipelines.serve import protocol
from musilingo_cli.pipelines.serve.protocol import APIError, AudioPart, AudioSource, AudioURLPart, TextPart


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


class Server:
    """What the routes share: model, engine, encoder thread, decode pool and the limits."""

    def __init__(self, model, engine, config):
        self.model, self.engine, self.config = model, engine, config
        self.encoder = EncoderWorker(model, config.encoder_batch_size, config.encoder_threads or 1)
        self.decoders = concurrent.futures.ThreadPoolExecutor(config.workers, thread_name_prefix="musilingo-audio")
        self.local_root = Path(config.allowed_local_media_path).resolve() if config.allowed_local_media_path else None

    def close(self) -> None:
        self.decoders.shutdown(wait=False, cancel_futures=True)
        self.encoder.close()
        self.engine.close()

    async def conversation(self, request: protocol.ChatRequest) -> tuple[list[Message], str | None]:
        """The request's messages with its audio decoded and encoded; the system text, if any."""
        loop = asyncio.get_running_loop()
        # base64 decoding holds the loop for milliseconds per clip: a worker thread does it
        plan, system = await loop.run_in_executor(self.decoders, self._plan, request)
        sources = [s for _, s in plan if isinstance(s, AudioSource)]
        cfg = self.config
        self.encoder.expect(+1)  # the encoder thread waits for requests still decoding their audio
        try:
            clips = await asyncio.gather(
                *[
                    loop.run_in_executor(
                        self.decoders, decode_source, s, self.model, cfg.chunk_seconds, cfg.max_audio_seconds
                    )
                    for s in sources
                ]
            )
        except BaseException:
            self.encoder.expect(-1)
            raise
        encoded = self.encoder.submit(list(clips), announced=True)
        features = iter(await asyncio.wrap_future(encoded) if clips else [])
        clip_iter = iter(clips)
        messages = []
        for role, content in plan:
            if isinstance(content, AudioSource):
                messages.append(Message(role, Audio(next(features), content.where, next(clip_iter).seconds_used)))
            else:
                messages.append(Message(role, content))
        return messages, system

    def _plan(self, request: protocol.ChatRequest) -> tuple[list[tuple[str, Any]], str | None]:
        """The turns in order, (role, text | AudioSource), and the system text; APIError 400 for bad parts."""
        plan: list[tuple[str, Any]] = []  # (role, text | AudioSource)
        system = None
        for i, message in enumerate(request.messages):
            parts = (
                [protocol.TextPart(type="text", text=message.content)]
                if isinstance(message.content, str)
                else list(message.content or [])
            )
            if message.role in ("system", "developer"):
                system = " ".join(p.text for p in parts if isinstance(p, TextPart)) or None
                continue
            for j, part in enumerate(parts):
                if isinstance(part, (AudioPart, AudioURLPart)):
                    if message.role != "user":
                        raise APIError(400, f"messages.{i}.content.{j}: audio is accepted in user messages only")
                    plan.append(("user", protocol.audio_source(part, f"messages.{i}.content.{j}", self.local_root)))
            text = " ".join(p.text for p in parts if isinstance(p, TextPart)).strip()
            if text or message.role == "assistant":
                plan.append((message.role, text))
        if not plan or plan[-1][0] != "user":
            raise APIError(400, "messages: the last message must be the user's question", param="messages")
        return plan, system


def create_app(server: Server) -> FastAPI:
    """The FastAPI application (no interactive docs: they would load scripts from a CDN)."""
    app = FastAPI(title="musilingo", docs_url=None, redoc_url=None, openapi_url=None)
    cfg = server.config
    page = resources.files("musilingo_cli.pipelines.serve").joinpath("static/index.html").read_text("utf-8")

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, err: APIError):
        headers = {"Retry-After": "1"} if err.status in (429, 503) else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, err: StarletteHTTPException):
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, _err: Exception):  # never a traceback in a response
        return JSONResponse(APIError(500, "internal server error", "server_error").body(), status_code=500)

    def authorize(request: Request) -> None:
        if cfg.api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), cfg.api_key.encode()):
            raise APIError(401, "invalid API key: send it as 'Authorization: Bearer KEY'", code="invalid_api_key")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "running": server.engine.running,
            "waiting": server.engine.waiting,
            **dict(server.engine.stats),
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {
            "object": "list",
            "data": [{"id": cfg.served_model_name, "object": "model", "created": 0, "owned_by": "musilingo"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = await _body(request, cfg.max_body_bytes)
        # validating megabytes of JSON holds the loop: a worker thread does it
        parsed = await asyncio.get_running_loop().run_in_executor(server.decoders, protocol.parse_request, body)
        settings = protocol.settings_for(parsed, server.engine_settings, cfg.max_new_tokens)
        stops = protocol.stops_of(parsed)
        messages, system = await server.conversation(parsed)
        try:
            prompt = render(server.model, messages, cfg.template, system, settings.max_new_tokens)
        except ConfigError as err:
            raise APIError(400, str(err), code="context_length_exceeded", param="messages") from None
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job = Job(
            prompt.ids,
            [a.features for a in prompt.audio],
            settings,
            lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            stops=stops,
            seed=parsed.seed,
        )
        try:
            server.engine.submit(job)
        except QueueFull:
            raise APIError(
                503, "the server is busy (its queue is full); retry shortly", "server_error", code="queue_full"
            ) from None
        watcher = asyncio.create_task(_cancel_on_disconnect(request, server.engine, job))
        cid, name = protocol.new_id(), cfg.served_model_name
        if parsed.stream:
            usage = parsed.stream_options is not None and parsed.stream_options.include_usage
            return StreamingResponse(
                _sse(events, job, server.engine, watcher, cid, name, usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            event = await _last(events)
        finally:
            watcher.cancel()
            server.engine.cancel(job)  # a no-op once it has finished
        if event.error:
            raise APIError(500, event.error, "server_error")
        return protocol.completion(
            cid, name, event.text or "", event.finish_reason or "stop", event.prompt_tokens, event.completion_tokens
        )

    return app


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(
            413,
            f"the request body is {int(declared)} bytes, more than this server's limit of {limit}",
            code="request_too_large",
        )
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise APIError(
                413, f"the request body is more than this server's limit of {limit} bytes", code="request_too_large"
            )
    return bytes(body)


async def _cancel_on_disconnect(request: Request, engine, job: Job) -> None:
    """Wait for the client to leave (the body is read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    engine.cancel(job)


async def _last(events: asyncio.Queue) -> Event:
    while not (event := await events.get()).done:
        pass
    return event


async def _sse(events: asyncio.Queue, job: Job, engine, watcher: asyncio.Task, cid: str, name: str, usage: bool):
    def data(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    try:
        yield data(protocol.chunk(cid, name, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if event.delta:
                yield data(protocol.chunk(cid, name, {"content": event.delta}))
            if event.done:
                break
        if event.error:
            yield data(APIError(500, event.error, "server_error").body())
        else:
            yield data(protocol.chunk(cid, name, {}, event.finish_reason))
            if usage:
                yield data(
                    protocol.chunk(cid, name, {}, usage_=protocol.usage(event.prompt_tokens, event.completion_tokens))
                )
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        engine.cancel(job)
