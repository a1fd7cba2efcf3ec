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
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from musilingo_cli.model.context import PromptTooLong
from musilingo_cli.model.live_batch import Event, QueueFull
from musilingo_cli.model.live_batch import Request as Job
from musilingo_cli.pipelines.chat import Audio, Message, render
from musilingo_cli.pipelines.serve import protocol
from musilingo_cli.pipelines.serve.protocol import APIError, AudioPart, AudioSource, AudioURLPart, TextPart
from musilingo_cli.pipelines.serve.workers import Arrivals, EncoderWorker, EventRelay, decode_source


class Server:
    """What the routes share: model, engine, encoder thread, decode pool and the limits."""

    def __init__(self, model, engine, config, arriving: Arrivals | None = None):
        self.model, self.engine, self.config = model, engine, config
        self.arriving = arriving or Arrivals()  # requests on their way to the engine (its `coming`)
        self.encoder = EncoderWorker(model, config.encoder_batch_size, config.encoder_threads or 1)
        self.decoders = concurrent.futures.ThreadPoolExecutor(config.workers, thread_name_prefix="musilingo-audio")
        self.local_root = Path(config.allowed_local_media_path).resolve() if config.allowed_local_media_path else None
        self._relay: EventRelay | None = None

    def relay(self, loop: asyncio.AbstractEventLoop) -> EventRelay:
        """The relay of the running loop (one server runs on one loop; a new loop gets a new relay)."""
        if self._relay is None or self._relay.loop is not loop:
            self._relay = EventRelay(loop)
        return self._relay

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
        events: asyncio.Queue = asyncio.Queue()
        with server.arriving:  # until it is queued in the engine (or fails)
            # validating megabytes of JSON holds the loop: a worker thread does it
            parsed = await asyncio.get_running_loop().run_in_executor(server.decoders, protocol.parse_request, body)
            settings = protocol.settings_for(parsed, server.engine_settings, cfg.max_new_tokens)
            stops = protocol.stops_of(parsed)
            messages, system = await server.conversation(parsed)
            try:
                prompt = render(server.model, messages, cfg.template, system, settings.max_new_tokens)
            except PromptTooLong as err:
                raise APIError(400, str(err), code="context_length_exceeded", param="messages") from None
            relay = server.relay(asyncio.get_running_loop())
            job = Job(
                prompt.ids,
                [a.features for a in prompt.audio],
                settings,
                lambda event: relay.send(events, event),
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
            delta = event.delta
            while not event.done and not events.empty():  # behind the decoding loop: its steps in one chunk
                event = events.get_nowait()
                delta += event.delta
            if delta:
                yield data(protocol.chunk(cid, name, {"content": delta}))
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
