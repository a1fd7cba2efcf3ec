"""A local OpenAI-compatible chat server for make-mi tests and benchmarks (stdlib only).

`POST /v1/chat/completions` answers deterministically from the caption in the request:

- generation requests (no `<pairs>` block) get N pairs, N read from "Write N question-answer
  pairs" (default 5); answers are caption sentences (long prompts, recognised by "paraphrase" in
  the system message, get the whole caption). Some captions (by a hash of the text) also get an
  answer marked "(unsure)" and a repeated question, so the filter has something to drop.
- filter requests (a `<pairs>` JSON list) judge a pair unfaithful exactly when its answer
  contains NEGATIVE_MARKER; tests compute the expected drops from the journal's pairs.
- eval's judge requests: multiple choice (`<options>`: judge_reply) and the 0-5 judge score
  (`<candidate>`: score_reply).

Faults (`Faults`) are drawn per request from a seeded RNG: 429 with Retry-After, 500, a hang
past the client's timeout, a malformed JSON body, and a reply whose content is not JSON. The
log records every request (kind, caption, outcome) so tests can count requests per caption;
only requests that got a 200 reply count as `served` (billed). Each log entry also keeps the
request body as sent (`body`: messages, seed, max_tokens, ...), the client's retry-count header and
the usage the reply reported (`usage`, None when no 200 reply). `hold()` makes new requests wait
unanswered (for the kill-and-resume tests; `hold_at_filter` / `hold_at_request` start it at the Nth
filter request / Nth request); `release()` lets them go without a reply.

Output limits: `num_predict` cuts every reply longer than that many tokens (chars/4), as Ollama's
`num_predict` or llama.cpp's `n_predict` do; a request's own `max_tokens` is honoured the same way;
`cut_first` cuts the first N replies whatever their length. A cut reply is the first half of the
text with `finish_reason: "length"`.

Run alone: `python tests/chat_server.py --port-file PATH [--latency 0.2]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NEGATIVE_MARKER = "(unsure)"


@dataclass
class Faults:
    """Per-request probabilities of each injected fault (their sum is the fault rate)."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    hang: float = 0.0
    bad_body: float = 0.0
    not_json: float = 0.0
    retry_after: str = "0.05"
    hang_s: float = 2.0
    script: tuple[str, ...] = ()  # faults for the first requests, in order, before any random draw

    @classmethod
    def spread(cls, total: float, **kw) -> Faults:
        """`total` split evenly over the five faults."""
        each = total / 5
        return cls(each, each, each, each, each, **kw)


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def caption_of(messages: list[dict]) -> str:
    """The caption between <caption> tags in the user message."""
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    found = re.search(r"<caption>\s*(.*?)\s*</caption>", user, re.DOTALL)
    return found.group(1) if found else user


def generation_reply(messages: list[dict]) -> dict:
    """Deterministic pairs from the caption's sentences."""
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    caption = caption_of(messages)
    wanted = re.search(r"Write (\d+) question-answer pairs", user)
    n = int(wanted.group(1)) if wanted else 5
    long = "paraphrase" in system.lower()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", caption) if s.strip()] or [caption]
    topics = [
        "the instruments",
        "the mood",
        "the genre",
        "the tempo",
        "the vocals",
        "the recording",
        "the setting",
        "the rhythm",
    ]
    pairs = []
    for i in range(n):
        answer = caption if long else sentences[i % len(sentences)]
        pairs.append(
            {"question": f"What can you tell about {topics[i % len(topics)]} of this music?", "answer": answer}
        )
    h = _h(caption)
    if h % 3 == 0:
        pairs[h % n]["answer"] += f" {NEGATIVE_MARKER}"
    if h % 5 == 0:
        pairs.append(dict(pairs[0]))  # a duplicate question: the rules must drop it
    return {"pairs": pairs}


def filter_reply(messages: list[dict]) -> dict:
    """Unfaithful exactly when the answer carries NEGATIVE_MARKER."""
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    listed = json.loads(re.search(r"<pairs>\s*(.*?)\s*</pairs>", user, re.DOTALL).group(1))
    return {
        "verdicts": [
            {
                "index": p["index"],
                "faithful": NEGATIVE_MARKER not in p["answer"],
                "reason": "marker" if NEGATIVE_MARKER in p["answer"] else "supported",
            }
            for p in listed
        ]
    }


def judge_reply(messages: list[dict]) -> dict:
    """Multiple-choice judge: the letter written as "(X)" in the answer, else the one option whose text
    the answer contains, else null."""
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    answer = re.search(r"<answer>\s*(.*?)\s*</answer>", user, re.DOTALL).group(1)
    options = re.findall(
        r"^\(([A-Z])\) (.*)$", re.search(r"<options>\s*(.*?)\s*</options>", user, re.DOTALL).group(1), re.M
    )
    letter = re.search(r"\(([A-Z])\)", answer)
    if letter:
        return {"choice": letter.group(1)}
    named = [k for k, text in options if text.lower() in answer.lower()]
    return {"choice": named[0] if len(named) == 1 else None}


def score_reply(messages: list[dict]) -> dict:
    """Judge score (0-5): how many distinct words of the candidate occur in the first reference, at most 5;
    a candidate containing "(garbled)" gets a score that is not a number, "(out of range)" gets 7."""
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    candidate = re.search(r"<candidate>\s*(.*?)\s*</candidate>", user, re.DOTALL).group(1)
    first = re.search(r"<references>\s*1\. (.*?)$", user, re.M).group(1)
    if "(garbled)" in candidate:
        return {"score": "quite good"}
    if "(out of range)" in candidate:
        return {"score": 7}
    return {"score": min(5, len(set(candidate.lower().split()) & set(first.lower().split())))}


class ChatServer:
    """The server on 127.0.0.1, port chosen by the OS; `base_url` ends in /v1."""

    def __init__(
        self,
        faults: Faults | None = None,
        latency: float = 0.0,
        seed: int = 0,
        reject_json_mode: bool = False,
        fail_captions: set[str] | None = None,
        status_for_all: int | None = None,
        hold_at_filter: int | None = None,
        hold_at_request: int | None = None,
        num_predict: int | None = None,
        cut_first: int = 0,
    ):
        self.faults = faults or Faults()
        self.latency = latency
        self.reject_json_mode = reject_json_mode
        self.fail_captions = fail_captions or set()  # always 500 for these captions
        self.status_for_all = status_for_all  # e.g. 401: every request refused
        self.log: list[dict] = []
        self.hold_at_filter = hold_at_filter  # hold() when this many filter requests have arrived
        self._filters_seen = 0
        self.hold_at_request = hold_at_request  # hold() when this many requests have arrived
        self._requests_seen = 0
        self.num_predict = num_predict  # server-side output cap in tokens (chars/4)
        self.cut_first = cut_first  # cut the first N replies (finish_reason "length")
        self._script = list(self.faults.script)
        self.active = 0  # requests being answered now (held ones excluded)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._held = threading.Event()
        self._release = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()

    def hold(self) -> None:
        """From now on, requests wait without a reply (as if the model were still thinking)."""
        self._held.set()

    def release(self) -> None:
        """Held requests end without a reply; new ones are served again."""
        self._held.clear()
        self._release.set()

    def billed_tokens(self) -> dict[str, int]:
        """The usage reported in every 200 reply: what a paid API would bill."""
        total = {"prompt_tokens": 0, "completion_tokens": 0}
        for e in self.log:
            for k in total:
                total[k] += (e["usage"] or {}).get(k, 0)
        return total

    def served(self, kind: str | None = None) -> Counter:
        """200 replies per distinct request (kind, caption, hash of the messages): what a paid API would bill."""
        return Counter(
            (e["kind"], e["caption"], e["request"])
            for e in self.log
            if e["outcome"] == "ok" and kind in (None, e["kind"])
        )

    def _draw(self) -> str | None:
        f = self.faults
        with self._lock:
            if self._script:
                return self._script.pop(0) or None
            x = self._rng.random()
        for name, p in (
            ("rate_limit", f.rate_limit),
            ("server_error", f.server_error),
            ("hang", f.hang),
            ("bad_body", f.bad_body),
            ("not_json", f.not_json),
        ):
            if x < p:
                return name
            x -= p
        return None

    def _record(self, **entry) -> None:
        with self._lock:
            self.log.append({"t": time.monotonic(), **entry})


def _handler(server: ChatServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

        def do_POST(self):
            with server._lock:
                server.active += 1
            try:
                self._post()
            finally:
                with server._lock:
                    server.active -= 1

        def _post(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            request = json.loads(body)
            messages = request.get("messages", [])
            caption = caption_of(messages)
            user_text = next((m["content"] for m in messages if m.get("role") == "user"), "")
            kind = (
                "filter"
                if "<pairs>" in user_text
                else "judge"
                if "<options>" in user_text
                else "score"
                if "<candidate>" in user_text
                else "generate"
            )
            # The same messages twice = the same request twice (short and long differ in prompts).
            request_sha = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]
            entry = {
                "kind": kind,
                "caption": caption,
                "request": request_sha,
                "json_mode": "response_format" in request,
                "authorization": self.headers.get("Authorization"),
                "body": request,
                "retry_count": self.headers.get("x-stainless-retry-count"),
                "usage": None,
            }
            with server._lock:
                server._requests_seen += 1
                if server.hold_at_request is not None and server._requests_seen >= server.hold_at_request:
                    server._held.set()
            if kind == "filter" and server.hold_at_filter is not None:
                with server._lock:
                    server._filters_seen += 1
                    if server._filters_seen >= server.hold_at_filter:
                        server._held.set()
            if server._held.is_set():
                server._record(**entry, outcome="held")
                with server._lock:
                    server.active -= 1
                server._release.wait()
                with server._lock:
                    server.active += 1
                self.close_connection = True
                return
            if server.status_for_all:
                server._record(**entry, outcome=f"http_{server.status_for_all}")
                return self._send(
                    server.status_for_all,
                    {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}},
                )
            if server.reject_json_mode and "response_format" in request:
                server._record(**entry, outcome="http_400")
                return self._send(
                    400,
                    {
                        "error": {
                            "message": "response_format is not supported by this server",
                            "type": "invalid_request_error",
                        }
                    },
                )
            if caption in server.fail_captions:
                server._record(**entry, outcome="http_500")
                return self._send(500, {"error": {"message": "injected permanent failure"}})
            fault = server._draw()
            if server.latency:
                time.sleep(server.latency)
            if fault == "rate_limit":
                server._record(**entry, outcome="http_429")
                return self._send(
                    429,
                    {"error": {"message": "rate limited", "type": "rate_limit"}},
                    {"Retry-After": server.faults.retry_after},
                )
            if fault == "server_error":
                server._record(**entry, outcome="http_500")
                return self._send(500, {"error": {"message": "injected server error"}})
            if fault == "hang":
                server._record(**entry, outcome="hang")
                time.sleep(server.faults.hang_s)
                self.close_connection = True
                return
            if fault == "bad_body":
                server._record(**entry, outcome="bad_body")
                return self._send_raw(200, b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "{\\"pa')
            replies = {"generate": generation_reply, "filter": filter_reply, "judge": judge_reply, "score": score_reply}
            reply = replies[kind](messages)
            content = "I am sorry, I cannot help with that." if fault == "not_json" else json.dumps(reply)
            limits = [n for n in (server.num_predict, request.get("max_tokens")) if n is not None]
            with server._lock:
                cut = server.cut_first > 0 or any(len(content) // 4 > n for n in limits)
                server.cut_first = max(0, server.cut_first - 1)
            if cut:
                content = content[: min([len(content) // 2] + [4 * n for n in limits])]
            prompt_tokens = sum(len(m.get("content", "")) for m in messages) // 4
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(content) // 4,
                "total_tokens": prompt_tokens + len(content) // 4,
            }
            outcome = "cut" if cut else "not_json" if fault == "not_json" else "ok"
            server._record(**{**entry, "usage": usage}, outcome=outcome)
            self._send(
                200,
                {
                    "id": "chatcmpl-local",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": request.get("model", "local"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "length" if cut else "stop",
                        }
                    ],
                    "usage": usage,
                },
            )

        def _send(self, status: int, obj: dict, headers: dict | None = None):
            self._send_raw(status, json.dumps(obj).encode(), headers)

        def _send_raw(self, status: int, data: bytes, headers: dict | None = None):
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True, help="write the base URL here once listening")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    with ChatServer(Faults.spread(args.fault_rate), latency=args.latency) as server:
        args.port_file.write_text(server.base_url)
        threading.Event().wait()


if __name__ == "__main__":
    main()
