"""The OpenAI Chat Completions shape: request parsing (pydantic), audio sources, replies, errors.

What a request may hold (docs/serve.md): `messages` whose user content is a string or parts of
type `text`, `input_audio` ({"data": base64, "format": "wav" | "mp3" | "flac" | "ogg" | ...}) and
`audio_url` (vLLM's extension: `data:` URLs, and `file://` paths below --allowed-local-media-path);
`max_tokens` / `max_completion_tokens`, `temperature` (0 = greedy), `top_p`, `seed`, `stop`,
`stream` (+ `stream_options.include_usage`), and vLLM's `min_tokens`. Errors are
`{"error": {"message", "type", "param", "code"}}` with the HTTP status OpenAI uses.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

import pybase64
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from musilingo_cli.model.generation import GenerationSettings

# format -> file suffix (the suffix picks soundfile or ffmpeg in model.audio)
AUDIO_FORMATS = {
    "wav": ".wav",
    "mp3": ".mp3",
    "flac": ".flac",
    "ogg": ".ogg",
    "oga": ".oga",
    "opus": ".opus",
    "webm": ".webm",
    "m4a": ".m4a",
    "mp4": ".mp4",
    "aac": ".aac",
    "aiff": ".aiff",
    "pcm16": None,
}
MIME_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/webm": "webm",
    "video/webm": "webm",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/aiff": "aiff",
}


class APIError(Exception):
    """A request the server refuses: HTTP `status`, OpenAI error `type` and `code`, `param`."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.type, self.code, self.param = status, type_, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputAudio(_Strict):
    data: str
    format: str = "wav"


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURL(_Strict):
    url: str


class AudioURLPart(_Strict):
    type: Literal["audio_url"]
    audio_url: AudioURL


Part = Annotated[TextPart | AudioPart | AudioURLPart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)


def parse_request(body: bytes) -> ChatRequest:
    """The request, or APIError 400 naming the first field that is wrong."""
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise APIError(400, f"{where}: {first['msg']}", param=where) from None


@dataclass
class AudioSource:
    """Audio named by a request: bytes with a file suffix, or a local path; `where` names the part."""

    where: str
    suffix: str | None = None
    data: bytes | None = None
    path: Path | None = None


def audio_source(part: AudioPart | AudioURLPart, where: str, local_root: Path | None) -> AudioSource:
    """Check an audio part and return what to decode; APIError 400 for what cannot be used."""
    if isinstance(part, AudioPart):
        fmt = part.input_audio.format.lower()
        if AUDIO_FORMATS.get(fmt) is None:
            known = ", ".join(k for k, v in AUDIO_FORMATS.items() if v)
            raise APIError(
                400,
                f"{where}.input_audio.format {fmt!r} is not supported: use one of {known}",
                param=f"{where}.input_audio.format",
            )
        return AudioSource(where, AUDIO_FORMATS[fmt], _b64(part.input_audio.data, f"{where}.input_audio.data"))
    url = part.audio_url.url
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        mime = head[5:].split(";")[0].lower()
        if ";base64" not in head or mime not in MIME_FORMATS:
            raise APIError(
                400,
                f"{where}.audio_url: a data: URL must be base64 audio (data:audio/wav;base64,...), not {head[:40]!r}",
                param=f"{where}.audio_url",
            )
        return AudioSource(where, AUDIO_FORMATS[MIME_FORMATS[mime]], _b64(payload, f"{where}.audio_url"))
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise APIError(
            400,
            f"{where}.audio_url: only data: and file:// URLs are served (this server fetches "
            "nothing from the network); send the audio as input_audio",
            param=f"{where}.audio_url",
        )
    if local_root is None:
        raise APIError(
            400,
            f"{where}.audio_url: file:// URLs are off; start the server with "
            "--allowed-local-media-path DIR to allow files below DIR",
            param=f"{where}.audio_url",
        )
    path = Path(unquote(parsed.path)).resolve()
    if not path.is_relative_to(local_root):
        raise APIError(
            400, f"{where}.audio_url: {path} is outside the allowed local media path", param=f"{where}.audio_url"
        )
    return AudioSource(where, path.suffix, path=path)


def _b64(data: str, where: str) -> bytes:
    try:  # pybase64 (SIMD) for strict base64; the standard library for what it refuses (e.g. extra '=')
        raw = pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raw = _b64_lenient(data, where)
    if not raw:
        raise APIError(400, f"{where} is empty", param=where)
    return raw


def _b64_lenient(data: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        try:  # line-wrapped base64 (MIME style) is fine too
            raw = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, f"{where} is not valid base64", param=where) from None
    return raw


def settings_for(request: ChatRequest, base: GenerationSettings, max_new_tokens: int) -> GenerationSettings:
    """The server's preset with the request's knobs: temperature 0 = greedy, > 0 = sampling at it."""
    values = base.to_dict()
    values["max_new_tokens"] = request.max_completion_tokens or request.max_tokens or max_new_tokens
    if request.min_tokens is not None:
        values["min_new_tokens"] = request.min_tokens
    if request.temperature is not None:
        values["do_sample"] = request.temperature > 0
        values["temperature"] = request.temperature or values["temperature"]
    if request.top_p is not None:
        values["top_p"] = request.top_p
    settings = GenerationSettings(**values)
    if settings.needs_transformers:
        raise APIError(400, "this server decodes greedily or by sampling only (no beams, no repetition penalty)")
    return settings


def stops_of(request: ChatRequest) -> list[str]:
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stops) > 4:
        raise APIError(400, "stop: at most 4 stop sequences", param="stop")
    return [s for s in stops if s]


# --- replies ---


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(cid: str, model: str, text: str, reason: str, prompt: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}
        ],
        "usage": usage(prompt, completion_tokens),
    }


def chunk(
    cid: str, model: str, delta: dict[str, Any], reason: str | None = None, usage_: dict[str, int] | None = None
) -> dict[str, Any]:
    choices = [] if usage_ is not None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]
    out = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage_ is not None:
        out["usage"] = usage_
    return out


def usage(prompt: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}
