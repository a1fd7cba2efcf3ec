"""Continuous batching: one decoding batch that requests join and leave between steps.

    waiting requests --(between two steps)--> prefill together (left padding), KV caches merged
      -> every step: one token per row (each row its own settings), one forward for all rows
      -> a row ends at its own stop (EOS, `###`, a stop string, its token limit, a cancel)
         and leaves the batch at once; its slot is free for the next waiting request

The rows' KV cache, mask and positions are model.live_cache's LiveBatch (left-padded rows, keys and
values in buffers with spare columns): a row decodes the same tokens whether it runs alone or
beside others (up to float rounding in the padded matmuls).

`Engine` runs the loop in one thread; callers `submit` a `Request` and receive `Event`s from that
thread through the request's `on_event` callback (a server hands them to its event loop).
The token choice is decoding.choose_tokens' (greedy, or temperature -> top-k -> top-p) with a
generator per request, so a seeded request draws the same tokens whatever runs beside it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tokenizers.decoders import DecodeStream

from musilingo_cli.model.decoding import filter_logits
from musilingo_cli.model.generation import GenerationSettings, postprocess
from musilingo_cli.model.live_cache import LiveBatch, embed_rows

__all__ = ["Engine", "Event", "LiveBatch", "QueueFull", "Request", "embed_rows", "extend_text"]


class QueueFull(Exception):
    """More requests wait than the engine accepts (a server answers 503)."""


@dataclass
class Event:
    """What a request hears from the engine: text as it grows, then one final event."""

    delta: str = ""
    done: bool = False
    text: str | None = None  # final: the answer as `ask` would give it
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass(eq=False)
class Request:
    """One prompt to answer: a token row with AUDIO_ID where audio goes, its features in order.

    `stops` are extra stop strings (the answer is cut before the first); `on_event` is called
    from the engine's thread and must not block.
    """

    ids: list[int]
    audio: list[torch.Tensor]
    settings: GenerationSettings
    on_event: Callable[[Event], None]
    stops: list[str] = field(default_factory=list)
    seed: int | None = None
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    generator: torch.Generator | None = None
    text: str = ""  # `tokens` decoded so far (incrementally; the final answer is decoded whole)
    stream: DecodeStream | None = None


class Engine:
    """Answers submitted requests in one continuously refilled batch, in a thread of its own.

    `max_batch` rows decode at once and up to `max_waiting` more wait; beyond that `submit`
    raises QueueFull. Waiting requests join between two steps. `stats` counts what happened.

    `coming` (optional) says how many requests are on their way (their audio still being decoded
    or encoded by the caller). While some are and the batch has room, the loop holds its rows
    instead of stepping, for at most `hold_seconds` at a time and then steps freely as long again:
    where encoding and decoding share the same CPU cores, each step taken for a few rows while a
    burst is encoded costs nearly what a step for the whole batch costs, and slows the encoding
    that the rest of the batch waits for (a prefill-first schedule, bounded so that running rows
    still advance). None: never hold.
    """

    def __init__(
        self,
        model,
        max_batch: int = 32,
        max_waiting: int = 256,
        coming: Callable[[], int] | None = None,
        hold_seconds: float = 0.25,
    ):
        self.model, self.max_batch, self.max_waiting = model, max(1, max_batch), max(0, max_waiting)
        self.coming, self.hold_seconds = coming, hold_seconds
        self._held_since: float | None = None
        self._free_until = 0.0
        self.eos = set(model._eos_ids())
        self.end_sym = model.config.end_sym
        self.stats = collections.Counter(completed=0, cancelled=0, failed=0)
        self._waiting: collections.deque[Request] = collections.deque()
        self._rows: list[Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="musilingo-decode", daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, request: Request) -> None:
        """Queue `request`; raises QueueFull when `max_waiting` requests already wait."""
        if request.settings.do_sample:
            request.generator = torch.Generator(device=self._device())
            if request.seed is None:
                request.generator.seed()
            else:
                request.generator.manual_seed(request.seed)
        with self._cond:
            if len(self._waiting) + len(self._rows) >= self.max_batch + self.max_waiting:
                raise QueueFull(f"{len(self._rows)} requests are decoding and {len(self._waiting)} waiting")
            self._waiting.append(request)
            self._cond.notify()

    def cancel(self, request: Request) -> None:
        """Stop decoding `request` (its client left): its slot is freed before the next step."""
        request.cancelled = True
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _device(self) -> torch.device:
        return next(self.model.llm.parameters()).device

    # --- the loop (engine thread) ---

    def _run(self) -> None:
        batch = LiveBatch(self.model.llm)
        while True:
            with self._cond:
                while not self._closed:
                    if not self._waiting and not self._rows:
                        self._cond.wait()
                    elif self._hold():
                        self._cond.wait(timeout=0.01)  # `coming` may fall without a notify (a request failed)
                    else:
                        break
                if self._closed:
                    break
                joining = [
                    self._waiting.popleft() for _ in range(min(len(self._waiting), self.max_batch - len(self._rows)))
                ]
            try:
                if joining:  # then back to the top: more may have come, or the rows may be held
                    self._join(batch, [r for r in joining if not self._dropped(r)])
                    continue
                self._step(batch)
            except Exception as err:  # a failure ends the rows it hit, never the engine
                for request in self._rows:
                    self.stats["failed"] += 1
                    request.on_event(Event(done=True, finish_reason="error", error=f"decoding failed: {err}"))
                self._rows = []
                batch = LiveBatch(self.model.llm)
        for request in self._rows + list(self._waiting):
            request.on_event(Event(done=True, finish_reason="error", error="the server is shutting down"))

    def _hold(self) -> bool:
        """True when the rows should wait for requests on their way rather than step (under _cond)."""
        now = time.monotonic()
        if (
            self.coming is None
            or self._waiting
            or not self._rows
            or len(self._rows) >= self.max_batch
            or now < self._free_until
            or any(r.cancelled for r in self._rows)
            or self.coming() <= 0
        ):
            self._held_since = None
            return False
        if self._held_since is None:
            self._held_since = now
        elif now - self._held_since >= self.hold_seconds:
            self._held_since, self._free_until = None, now + self.hold_seconds
            return False
        return True

    def _dropped(self, request: Request) -> bool:
        if request.cancelled:
            self.stats["cancelled"] += 1
            request.on_event(Event(done=True, finish_reason="cancelled"))
        return request.cancelled

    def _join(self, batch: LiveBatch, joining: list[Request]) -> None:
        if joining:
            embeds, mask = embed_rows(self.model, [(r.ids, r.audio) for r in joining])
            batch.join(embeds, mask)
            self._rows += joining

    def _step(self, batch: LiveBatch) -> None:
        """Choose one token per row, retire finished rows, then run the step for the others."""
        tokens = self._choose(batch.logits)
        for request, token in zip(self._rows, tokens):
            request.tokens.append(token)
        texts = self._texts(tokens)
        keep = [i for i, (r, t, raw) in enumerate(zip(self._rows, tokens, texts)) if not self._finish(r, t, raw)]
        if len(keep) < len(self._rows):
            batch.keep(keep)
            self._rows = [self._rows[i] for i in keep]
        if self._rows:
            batch.advance(torch.tensor([r.tokens[-1] for r in self._rows]))

    def _texts(self, tokens: list[int]) -> list[str]:
        """Each row's tokens decoded, after this step's `tokens`: a tokenizers DecodeStream per row adds
        the new token's text (decoding every row whole at every step grew with the answers); a tokenizer
        without a Rust backend, or one that cleans up spaces, decodes the batch whole."""
        tok = self.model.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None or getattr(tok, "clean_up_tokenization_spaces", False):
            return tok.batch_decode([r.tokens for r in self._rows], skip_special_tokens=True)
        return [extend_text(request, token, backend) for request, token in zip(self._rows, tokens)]

    def _choose(self, logits: torch.Tensor) -> list[int]:
        """Greedy rows by one argmax; sampling rows with their own generator and settings."""
        eos = sorted(self.eos)
        early = [len(r.tokens) < r.settings.min_new_tokens for r in self._rows]
        if eos and any(early):  # EOS is not allowed before a row's min_new_tokens
            rows = torch.tensor(early, device=logits.device).nonzero()
            logits[rows, torch.tensor(eos, device=logits.device)] = float("-inf")
        chosen = logits.argmax(dim=-1)
        for i, r in enumerate(self._rows):
            if r.settings.do_sample:
                probs = filter_logits(logits[i : i + 1], r.settings).softmax(dim=-1)
                noise = torch.empty_like(probs).exponential_(1, generator=r.generator)
                chosen[i] = (probs / noise).argmax(dim=-1)[0]
        return chosen.tolist()

    def _finish(self, request: Request, token: int, raw: str) -> bool:
        """Tell the request its new text (`raw`: its tokens decoded); True when it has ended (and
        got its final event)."""
        if request.cancelled:
            self.stats["cancelled"] += 1
            request.on_event(Event(done=True, finish_reason="cancelled"))
            return True
        stopped = token in self.eos or any(s in raw for s in [self.end_sym, *request.stops] if s)
        reason = "stop" if stopped else "length" if len(request.tokens) >= request.settings.max_new_tokens else None
        if reason is None:
            delta = self._delta(request, _visible(raw, self.end_sym, request.stops, final=False))
            if delta:
                request.on_event(Event(delta=delta))
            return False
        raw = self.model.tokenizer.decode(request.tokens, skip_special_tokens=True)  # exactly as `ask` decodes
        text = _visible(raw, self.end_sym, request.stops, final=True)
        delta = text[len(request.sent) :] if text.startswith(request.sent) else ""
        self.stats["completed"] += 1
        request.on_event(
            Event(
                delta=delta,
                done=True,
                text=text,
                finish_reason=reason,
                prompt_tokens=len(request.ids),
                completion_tokens=len(request.tokens),
            )
        )
        return True

    @staticmethod
    def _delta(request: Request, visible: str) -> str:
        if not visible.startswith(request.sent):
            return ""  # an 'Assistant:' restarted the answer: what was sent stays, the rest waits for the end
        delta = visible[len(request.sent) :]
        request.sent = visible
        return delta


def extend_text(request: Request, token: int, backend) -> str:
    """`request.text` with `token`'s text added (a tokenizers.Tokenizer `backend`, special tokens
    skipped); text that ends in an incomplete UTF-8 character waits for the tokens that complete it."""
    if request.stream is None:
        request.stream = DecodeStream(skip_special_tokens=True)
    request.text += request.stream.step(backend, token) or ""
    return request.text


def _visible(raw: str, end_sym: str, stops: list[str], final: bool) -> str:
    """The answer in `raw` as the official post-processing gives it (cut at the end symbol, after
    the last 'Assistant:', stripped), also cut at the request's stop strings. While decoding
    (`final` False), text that may still turn out to be the start of a stop is held back."""
    for stop in stops:
        if stop:
            raw = raw.split(stop)[0]
    text = postprocess(raw, end_sym)
    if final:
        return text
    text = text.split(end_sym)[0] if end_sym else text
    holds = [s for s in [end_sym, "Assistant:", *stops] if s]
    cut = len(text)
    for stop in holds:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                cut = min(cut, len(text) - k)
                break
    return text[:cut].rstrip()
