"""A small wrapper around the `openai` client for batch jobs against any OpenAI-compatible server
(OpenAI, vLLM, llama.cpp, Ollama): a rate limiter shared by all workers, an explicit output budget
(`max_tokens`), JSON mode with a fallback for servers that refuse it, and tolerant JSON parsing.

Who retries what:
- transport faults (connection errors, timeouts, 408/409/429/5xx without `Retry-After`) are the
  `openai` client's own retries (`max_retries`, its exponential backoff);
- a reply carrying `Retry-After` is ours: honoured in full up to `max_retry_after` seconds, and a
  longer wait fails the unit with a reason that names it (the client would cap or skip it);
- content faults (unparseable JSON, a malformed body) are retried here, each retry sent with a
  different `seed` and a note saying why the last reply was unusable (a server that honours the
  seed would otherwise repeat the same bad reply); each retry is recorded in `ChatReply.retries`;
- a reply cut at the output limit (`finish_reason == "length"`) is retried once with twice the
  budget; cut again, the unit fails as `truncated`.

Errors a retry cannot fix (bad key, bad model, bad URL) raise `ChatAPIError` at once; faults that
outlast the retries raise `RetriesExhausted`, which callers record per item and go on. The API key
is passed to the client and never appears in a message; URLs are shown through `redact_url`.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from musilingo_cli.core.console import warn
from musilingo_cli.core.errors import ChatAPIError
from musilingo_cli.pipelines.chat_access import (  # noqa: F401 - read_api_key, check_base_url: part of this API
    api_key_source,
    check_base_url,
    is_local_host,
    read_api_key,
    redact_url,
)
from musilingo_cli.pipelines.chat_parsing import (
    UnparseableReply,
    error_message,
    parse_json_reply,
    retry_after,
    unpack_completion,
)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
NOTE = "Note: an earlier reply to this request could not be used ({reason}). Reply with only the JSON asked for."


class Stopped(Exception):
    """The run is being stopped (Ctrl-C or a fatal error elsewhere): give up quietly."""


class RetriesExhausted(Exception):
    """A request that kept failing; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str, usage: dict[str, int] | None = None, attempts: int = 0):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.usage = usage or {"prompt_tokens": 0, "completion_tokens": 0}
        self.attempts = attempts


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
    """A parsed reply: `data` is the JSON the model returned; usage and attempts count every try
    (HTTP requests, the client's transport retries included); `retries` lists what each content
    retry changed ({"after": reason, "seed": ..., "max_tokens": ..., "note": bool})."""

    data: Any
    text: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    retries: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ChatSettings:
    """Where to send requests and how hard to try (times in seconds, budgets in tokens)."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never in a repr, a log or a traceback
    key_source: str = "$OPENAI_API_KEY"  # named in the 401 hint
    timeout: float = 60.0
    max_retries: int = 6
    retry_base: float = 1.0
    max_retry_after: float = 300.0
    requests_per_minute: float | None = None
    temperature: float | None = 0.7
    seed: int | None = None
    json_mode: bool = True
    max_tokens: int | None = 2048


class ChatClient:
    """Thread-safe: one instance serves every worker of a run; close it (or use `with`) when done.

    `events(record)`, when given, is called from worker threads with {"event": "sent", "request": id}
    before each request and {"event": "reply" | "no_reply", "request": id, "usage": {...} | None}
    after it, so a caller can journal what may have been billed before the unit is journaled.
    """

    def __init__(
        self,
        settings: ChatSettings,
        stop: threading.Event | None = None,
        rng_seed: int | None = None,
        events: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.settings = settings
        self.stop = stop or threading.Event()
        self.limiter = RateLimiter(settings.requests_per_minute, self.stop)
        self.json_mode = settings.json_mode
        self.budget_param = "max_tokens"  # "max_completion_tokens" for servers that refuse max_tokens
        self.events = events or (lambda record: None)
        self._rng = random.Random(rng_seed)
        self._rng_lock = threading.Lock()
        url = settings.base_url
        if settings.api_key and url and urlsplit(url).scheme == "http" and not is_local_host(url):
            warn(f"the API key is sent unencrypted over plain http to {redact_url(url)}; use https for a remote server")
        # Local servers need no key, but the client insists on one: send a placeholder.
        self._client = _openai_client(settings)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat_json(self, messages: list[dict[str, str]], validate=None, max_tokens: int | None = None) -> ChatReply:
        """Send `messages`, return the reply's JSON; see the module docstring for what is retried.

        `validate(data)` may raise UnparseableReply for JSON of the wrong shape; such replies are
        retried like unparseable ones (their tokens still count). `max_tokens` overrides the
        settings' output budget for this request. Raises RetriesExhausted, ChatAPIError, Stopped.
        """
        s = self.settings
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        budget = max_tokens or s.max_tokens
        seed, note, retries, attempts, delay = s.seed, None, [], 0, 0.0
        reason, detail, cut = "unknown", "", False
        for attempt in range(s.max_retries + 1):
            if delay:
                self._sleep(delay)
            delay = 0.0
            self.limiter.acquire()
            sent = messages + ([{"role": "user", "content": NOTE.format(reason=note)}] if note else [])
            try:
                response, taken = self._create(sent, seed, budget)
            except _Transient as err:
                attempts += err.attempts
                reason, detail = err.reason, err.detail
                if err.retry_after is None:
                    raise RetriesExhausted(reason, f"{detail} (after {attempts} attempts)", usage, attempts) from None
                if err.retry_after > s.max_retry_after:
                    raise RetriesExhausted(
                        "retry_after_too_long",
                        f"{detail}; the server asked to wait {err.retry_after:g} s before retrying (Retry-After), "
                        f"more than --max-retry-after {s.max_retry_after:g} s: raise it or rerun later",
                        usage,
                        attempts,
                    ) from None
                delay = err.retry_after
                continue
            except _Malformed as err:
                attempts += err.attempts
                reason, detail = "malformed_response", err.detail
                seed, note = self._vary(retries, attempt, seed, "malformed_response", budget)
                delay = self._backoff(attempt + 1)
                continue
            attempts += taken + 1
            text, prompt_tokens, completion_tokens, finish = unpack_completion(response)
            usage["prompt_tokens"] += prompt_tokens
            usage["completion_tokens"] += completion_tokens
            if finish == "length":
                reason = "truncated"
                tried = f"max_tokens {budget // 2} and then {budget}" if cut else f"max_tokens {budget}"
                detail = (
                    f"the reply was cut at the output limit (finish_reason 'length') with {tried}; the server may cap"
                    " replies (Ollama num_predict, llama.cpp n_predict): raise that limit or --max-output-tokens"
                )
                if cut or budget is None:
                    raise RetriesExhausted(reason, f"{detail} (after {attempts} attempts)", usage, attempts)
                cut, budget = True, budget * 2
                retries.append({"after": "truncated", "seed": seed, "max_tokens": budget, "note": bool(note)})
                continue
            try:
                data = parse_json_reply(text)
                if validate is not None:
                    validate(data)
            except UnparseableReply as err:
                reason, detail = "unparseable", f"{err}; reply began {text[:80]!r}"
                seed, note = self._vary(retries, attempt, seed, f"unparseable: {err}", budget)
                delay = self._backoff(attempt + 1)
                continue
            return ChatReply(data, text, usage["prompt_tokens"], usage["completion_tokens"], attempts, retries)
        raise RetriesExhausted(reason, f"{detail} (after {attempts} attempts)", usage, attempts)

    def _vary(self, retries, attempt, seed, why, budget):
        """What the next content retry sends differently: another seed, and a note saying why."""
        new_seed = None if seed is None else self.settings.seed + attempt + 1
        retries.append({"after": why.split(":")[0], "seed": new_seed, "max_tokens": budget, "note": True})
        return new_seed, why

    def _create(self, messages, seed, budget):
        """One call (the client's transport retries inside): (parsed response, retries taken)."""
        import openai  # already imported by __init__; local so the module loads without it

        kwargs: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if self.settings.temperature is not None:
            kwargs["temperature"] = self.settings.temperature
        if seed is not None:
            kwargs["seed"] = seed
        if budget:
            kwargs[self.budget_param] = budget
        if self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        request = uuid.uuid4().hex[:16]
        self.events({"event": "sent", "request": request})
        tries = self.settings.max_retries + 1
        try:
            raw = self._client.chat.completions.with_raw_response.create(**kwargs)
        except openai.APITimeoutError:
            self.events({"event": "no_reply", "request": request, "usage": None})
            raise _Transient("timeout", f"no reply within {self.settings.timeout:g} s", tries) from None
        except openai.APIConnectionError as err:
            self.events({"event": "no_reply", "request": request, "usage": None})
            cause = type(err.__cause__).__name__ if err.__cause__ else "connection error"
            raise _Transient(
                "connection", f"cannot reach {redact_url(self.settings.base_url)} ({cause})", tries
            ) from None
        except openai.APIStatusError as err:
            self.events({"event": "no_reply", "request": request, "usage": None})
            return self._status_error(err, messages, seed, budget)
        try:
            response = raw.parse()
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as err:
            self.events({"event": "reply", "request": request, "usage": None})  # billed, usage unknown
            raise _Malformed(f"response body is not valid JSON ({type(err).__name__})", raw.retries_taken + 1) from None
        _, prompt_tokens, completion_tokens, _ = unpack_completion(response)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        self.events({"event": "reply", "request": request, "usage": usage})
        return response, raw.retries_taken

    def _status_error(self, err, messages, seed, budget):
        status = err.status_code
        message = error_message(err)
        if status == 400 and self.json_mode and "response_format" in message:
            # The server does not do JSON mode: ask in plain text and parse tolerantly.
            self.json_mode = False
            return self._create(messages, seed, budget)
        if status == 400 and self.budget_param == "max_tokens" and "max_completion_tokens" in message:
            self.budget_param = "max_completion_tokens"  # newer OpenAI models refuse max_tokens
            return self._create(messages, seed, budget)
        if status in RETRYABLE_STATUS or status >= 500:
            wait = retry_after(err.response.headers)
            tries = 1 if wait is not None else self.settings.max_retries + 1
            raise _Transient(f"http_{status}", message[:200], tries, wait)
        source = self.settings.key_source
        hint = {
            401: f"check {source}",
            403: f"check {source} and that the key may use this model",
            404: "check --base-url (it usually ends in /v1) and --model",
        }.get(status, "check --model, --base-url and the prompt files")
        raise ChatAPIError(
            f"the chat API at {redact_url(self.settings.base_url)} refused the request for model "
            f"'{self.settings.model}' with HTTP {status} ({message[:160]}); {hint}"
        )

    def _backoff(self, attempt: int) -> float:
        """Full jitter on an exponential ceiling (content retries)."""
        ceiling = min(60.0, self.settings.retry_base * 2 ** (attempt - 1))
        with self._rng_lock:
            return self._rng.uniform(0, ceiling)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped()


def _openai_client(settings: ChatSettings):
    """The `openai` client with its own transport retries, except for replies that carry Retry-After."""
    from openai import OpenAI  # here, not at the top: keeps `musilingo --help` fast

    class _Client(OpenAI):
        def _should_retry(self, response) -> bool:
            # A server-set wait is ours to honour in full (up to --max-retry-after) or to report;
            # the client would cap it at two minutes or give up without saying how long.
            if retry_after(response.headers) is not None:
                return False
            return super()._should_retry(response)

    return _Client(
        api_key=settings.api_key or "no-key-set",
        base_url=settings.base_url,
        max_retries=settings.max_retries,
        timeout=settings.timeout,
    )


class _Transient(Exception):
    def __init__(self, reason: str, detail: str, attempts: int, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.detail, self.attempts, self.retry_after = reason, detail, attempts, retry_after


class _Malformed(Exception):
    def __init__(self, detail: str, attempts: int):
        super().__init__(detail)
        self.detail, self.attempts = detail, attempts
