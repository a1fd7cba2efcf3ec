"""Reading chat replies: the JSON in a model's text (tolerant of prose and code fences), the
content, usage and finish_reason of a completion, a server's error message, and `Retry-After`."""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import Any


class UnparseableReply(Exception):
    """The server answered, but the content is not the JSON we asked for (retried like a fault)."""


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


def error_message(err) -> str:
    """The server's own message from an `openai` APIStatusError (its JSON body's error.message)."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(err, "message", err))


def unpack_completion(response) -> tuple[str, int, int, str | None]:
    """(content, prompt tokens, completion tokens, finish_reason) of a chat completion."""
    choices = getattr(response, "choices", None) or []
    text, finish = "", None
    if choices:
        finish = getattr(choices[0], "finish_reason", None)
        if getattr(choices[0], "message", None) is not None:
            text = choices[0].message.content or ""
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
    completion = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
    return text, prompt, completion, finish


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
