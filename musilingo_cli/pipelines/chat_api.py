"""A small wrapper around the `openai` client for batch jobs against any OpenAI-compatible server
(OpenAI, vLLM, llama.cpp, Ollama): a rate limiter shared by all workers, its own bounded retry
loop (exponential backoff with full jitter, honouring `Retry-After`), JSON mode with a fallback
for servers that refuse it, and tolerant JSON parsing of replies.

Errors a retry cannot fix (bad key, bad model, bad URL) raise `ChatAPIError` at once; transient
ones that outlast the retries raise `RetriesExhausted`, which callers record per item and go on.
The API key is passed to the client and never appears in a message.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import ChatAPIError

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class Stopped(Exception):
    """The run is being stopped (Ctrl-C or a fatal error elsewhere): give up quietly."""


class RetriesExhausted(Exception):
    """A request that kept failing transiently; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str, usage: dict[str, int] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.usage = usage or {"prompt_tokens": 0, "completion_tokens": 0}


class UnparseableReply(Exception):
    """The server answered, but the content is not the JSON we asked for (retried like a fault)."""


class RateLimiter:
    """Evenly spaced request slots shared by all threads: at most `per_minute` starts a minute.

    An interval limiter rather than a bursty bucket, so a fresh run does not fire `concurrency`
    requests at once into a server that counts per second. Waiting wakes up on `stop`.
    """

    def __init__(self, per_minute: float | None, stop: threading.Event):
        self.interval = 60.0 / per_minute if per_minute and per_minute > 0 else 0.0
        self.stop = stop
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until this caller's slot comes (or raise Stopped)."""
        if self.interval == 0.0:
            if self.stop.is_set():
                raise Stopped()
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if self.stop.wait(max(0.0, slot - time.monotonic())):
            raise Stopped()


@dataclass
class ChatReply:
    """A parsed reply: `data` is the JSON the model returned; usage counts every attempt."""

    data: Any
    text: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int


@dataclass
class ChatSettings:
    """Where to send requests and how hard to try."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never in a repr, a log or a traceback
    timeout: float = 60.0
    max_retries: int = 6
    retry_base: float = 1.0
    retry_max: float = 60.0
    requests_per_minute: float | None = None
    temperature: float | None = 0.7
    seed: int | None = None
    json_mode: bool = True


def read_api_key(key_file: str | Path | None = None) -> str | None:
    """The API key from `key_file` (first line) if given, else from OPENAI_API_KEY."""
    if key_file is None:
        return os.environ.get("OPENAI_API_KEY")
    try:
        key = Path(key_file).read_text(encoding="utf-8").strip().splitlines()
    except OSError as err:
        raise ChatAPIError(f"--api-key-file {key_file}: cannot read it ({err.strerror})") from None
    if not key or not key[0].strip():
        raise ChatAPIError(f"--api-key-file {key_file}: the file is empty; put the key on its first line")
    return key[0].strip()


class ChatClient:
    """Thread-safe: one instance serves every worker of a run."""

    def __init__(self, settings: ChatSettings, stop: threading.Event | None = None, rng_seed: int | None = None):
        from openai import OpenAI

        self.settings = settings
        self.stop = stop or threading.Event()
        self.limiter = RateLimiter(settings.requests_per_minute, self.stop)
        self.json_mode = settings.json_mode
        self._rng = random.Random(rng_seed)
        self._rng_lock = threading.Lock()
        # Local servers need no key, but the client insists on one: send a placeholder.
        self._client = OpenAI(
            api_key=settings.api_key or "no-key-set",
            base_url=settings.base_url,
            max_retries=0,  # retries are ours: bounded, jittered, Retry-After aware, stoppable
            timeout=settings.timeout,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def chat_json(self, messages: list[dict[str, str]], validate=None) -> ChatReply:
        """Send `messages`, return the reply's JSON, retrying transient faults and bad content.

        `validate(data)` may raise UnparseableReply for JSON of the wrong shape; such replies
        are retried like a transient fault (the tokens are still counted).
        """
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        reason, detail, wait_at_least = "unknown", "", None
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                self._sleep(self._backoff(attempt, wait_at_least))
            self.limiter.acquire()
            try:
                response = self._create(messages)
            except _Transient as err:
                reason, detail, wait_at_least = err.reason, err.detail, err.retry_after
                continue
            text, prompt_tokens, completion_tokens = _unpack(response)
            usage["prompt_tokens"] += prompt_tokens
            usage["completion_tokens"] += completion_tokens
            try:
                data = parse_json_reply(text)
                if validate is not None:
                    validate(data)
            except UnparseableReply as err:
                reason, detail, wait_at_least = "unparseable", f"{err}; reply began {text[:80]!r}", None
                continue
            return ChatReply(data, text, usage["prompt_tokens"], usage["completion_tokens"], attempt + 1)
        raise RetriesExhausted(reason, f"{detail} (after {self.settings.max_retries + 1} attempts)", usage)

    def _create(self, messages):
        import openai

        kwargs: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if self.settings.temperature is not None:
            kwargs["temperature"] = self.settings.temperature
        if self.settings.seed is not None:
            kwargs["seed"] = self.settings.seed
        if self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            return self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            raise _Transient("timeout", f"no reply within {self.settings.timeout:g} s") from None
        except openai.APIConnectionError as err:
            raise _Transient("connection", f"connection failed ({type(err.__cause__).__name__ if err.__cause__ else err})") from None
        except openai.APIStatusError as err:
            return self._status_error(err, messages)
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as err:
            raise _Transient("malformed_response", f"response body is not valid JSON ({type(err).__name__})") from None

    def _status_error(self, err, messages):
        status = err.status_code
        message = _error_message(err)
        if status == 400 and self.json_mode and "response_format" in message:
            # The server does not do JSON mode: ask in plain text and parse tolerantly.
            self.json_mode = False
            return self._create(messages)
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Transient(f"http_{status}", message[:200], retry_after(err.response.headers))
        where = self.settings.base_url or "https://api.openai.com/v1"
        hint = {
            401: "check OPENAI_API_KEY",
            403: "check OPENAI_API_KEY and that the key may use this model",
            404: "check --base-url (it usually ends in /v1) and --model",
        }.get(status, "check --model, --base-url and the prompt files")
        raise ChatAPIError(f"the chat API at {where} refused the request for model '{self.settings.model}' with HTTP {status} ({message[:160]}); {hint}")

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Full jitter on an exponential ceiling; a server's Retry-After is a floor."""
        ceiling = min(self.settings.retry_max, self.settings.retry_base * 2 ** (attempt - 1))
        with self._rng_lock:
            delay = self._rng.uniform(0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.settings.retry_max))
        return delay

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped()


class _Transient(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


def retry_after(headers) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or `retry-after-ms`; None if absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(err) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(err, "message", err))


def _unpack(response) -> tuple[str, int, int]:
    choices = getattr(response, "choices", None) or []
    text = ""
    if choices and getattr(choices[0], "message", None) is not None:
        text = choices[0].message.content or ""
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
    completion = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
    return text, prompt, completion


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def parse_json_reply(text: str) -> Any:
    """The JSON in a model reply: the whole text, a fenced block, or the first object/array in it.

    Raises UnparseableReply when none of these parse (servers without JSON mode often wrap
    the JSON in prose or code fences).
    """
    if not text or not text.strip():
        raise UnparseableReply("empty reply")
    candidates = [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)) and value:
            return value
    raise UnparseableReply("no JSON object in the reply")
