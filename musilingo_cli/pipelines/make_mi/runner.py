"""make-mi's request runner: the journal state per (caption id, kind), the plan of units still to
do, and the worker threads that send one generation or one filter request per task. Filter steps
go before new generations; only the main thread writes the journal, one record per result.

Every HTTP request is also logged in requests.jsonl as it is sent and as its reply arrives (with
the reply's token usage), so tokens billed for a unit that was never journaled (kill -9 during a
retry) still count in the summary, and requests that never got a reply are counted."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.console import progress
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.data.captions import Caption
from musilingo_cli.pipelines.chat_access import preflight
from musilingo_cli.pipelines.chat_api import (
    ChatClient,
    ChatSettings,
    RetriesExhausted,
    Stopped,
    api_key_source,
    read_api_key,
)
from musilingo_cli.pipelines.make_mi.config import MakeMIConfig
from musilingo_cli.pipelines.make_mi.prompts import Prompt
from musilingo_cli.pipelines.make_mi.replies import parse_pairs, parse_verdicts, rule_rejects


def journal_key(record: dict[str, Any]) -> str:
    """The journal's key for a record: one per (record type, kind, caption id)."""
    return f"{record['type']}:{record['kind']}:{record['id']}"


def _generate(client, prompt: Prompt, caption: Caption, kind: str, config: MakeMIConfig) -> dict[str, Any]:
    """One generation request -> a `generated` journal record."""
    found: dict[str, Any] = {}

    def validate(data):
        found["pairs"], found["bad"] = parse_pairs(data)

    reply = client.chat_json(prompt.messages(caption=caption.text, n=config.pairs_for(kind)), validate)
    return {
        "type": "generated",
        "id": caption.id,
        "kind": kind,
        "caption": caption.text,
        "is_audioset_eval": caption.is_eval,
        "meta": caption.extra,
        "pairs": found["pairs"],
        "bad_items": found["bad"],
        "raw": reply.text,
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
        "attempts": reply.attempts,
        "retries": reply.retries,
        "model": config.model,
        "prompt": prompt.name,
        "prompt_sha256": prompt.sha256,
    }


def _filter(client, prompt: Prompt | None, generated: dict[str, Any], config: MakeMIConfig) -> dict[str, Any]:
    """Rules, then one filter request for the pairs that pass them -> a `filtered` journal record."""
    rules = rule_rejects(generated["pairs"], generated["caption"], generated["kind"], config)
    sent = [i for i in range(len(generated["pairs"])) if i not in rules]
    record = {
        "type": "filtered",
        "id": generated["id"],
        "kind": generated["kind"],
        "rules": [{"index": i, "reason": r} for i, r in sorted(rules.items())],
        "verdicts": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        "attempts": 0,
        "raw": None,
        "filter_prompt": prompt.name if prompt else None,
        "filter_prompt_sha256": prompt.sha256 if prompt else None,
    }
    if not sent:  # nothing left to judge: no request, no cost
        return record
    listed = [{"index": k + 1, **generated["pairs"][i]} for k, i in enumerate(sent)]
    found: dict[str, Any] = {}

    def validate(data):
        found["verdicts"] = parse_verdicts(data, len(sent))

    messages = prompt.messages(
        caption=generated["caption"], pairs=json.dumps(listed, ensure_ascii=False, indent=1), n=len(sent)
    )
    reply = client.chat_json(messages, validate)
    record["verdicts"] = [{"index": i, **v} for i, v in zip(sent, found["verdicts"])]
    record["usage"] = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
    record["attempts"], record["raw"], record["retries"] = reply.attempts, reply.text, reply.retries
    return record


@dataclass
class State:
    """What the journal says about each (caption id, kind)."""

    generated: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    filtered: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    failed: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})

    def add(self, record: dict[str, Any]) -> None:
        unit = (record["id"], record["kind"])
        for name in self.tokens:
            self.tokens[name] += record.get("usage", {}).get(name, 0)
        if record["type"] == "generated":
            self.generated[unit] = record
            self.failed.pop(unit, None)
        elif record["type"] == "filtered":
            self.filtered[unit] = record
            self.failed.pop(unit, None)
        elif record["type"] == "failed":
            self.failed[unit] = record


def plan(captions: list[Caption], config: MakeMIConfig, state: State) -> list[tuple[str, Caption, str]]:
    """Units still to do, as ("generate"|"filter", caption, kind); finished units are skipped."""
    todo = []
    for caption in captions:
        for kind in config.kinds:
            unit = (caption.id, kind)
            if unit in state.filtered:
                continue
            if unit in state.failed and not config.retry_failed:
                continue
            todo.append(("filter" if unit in state.generated else "generate", caption, kind))
    return todo


def execute(config, todo, state: State, journal, prompts, filter_prompt) -> None:
    """Run the units on `concurrency` worker threads; only this thread writes the journal."""
    if not todo:
        return
    stop = threading.Event()
    api_key = read_api_key(config.api_key_file)
    settings = ChatSettings(
        model=config.model,
        base_url=config.base_url or os.environ.get("OPENAI_BASE_URL") or None,
        api_key=api_key,
        key_source=api_key_source(config.api_key_file, api_key),
        timeout=config.timeout,
        max_retries=config.max_retries,
        retry_base=config.retry_base,
        max_retry_after=config.max_retry_after,
        requests_per_minute=config.requests_per_minute,
        temperature=config.temperature,
        seed=config.seed,
        max_tokens=config.max_output_tokens,
    )
    preflight(settings.base_url, api_key, timeout=min(config.timeout, 10.0))
    requests_log = RequestLog(config.out / REQUESTS_FILE)
    client = ChatClient(settings, stop, rng_seed=config.seed, events=requests_log.append)
    tasks = _Tasks()
    results: queue.Queue = queue.Queue()
    for kind_of_task, caption, kind in todo:
        tasks.put((kind_of_task, caption, kind, state.generated.get((caption.id, kind))))

    def work(task):
        kind_of_task, caption, kind, generated = task
        if kind_of_task == "generate":
            return _generate(client, prompts[kind], caption, kind, config)
        return _filter(client, filter_prompt, generated, config)

    workers = [
        threading.Thread(target=_worker, args=(tasks, results, work, stop), daemon=True)
        for _ in range(config.concurrency)
    ]
    for w in workers:
        w.start()
    try:
        _collect(config, len(todo), tasks, results, state, journal)
    finally:
        # Daemon workers: an in-flight request must not hold up Ctrl-C; what finished is journaled.
        stop.set()
        for _ in workers:
            tasks.put(None)
        client.close()
        requests_log.close()


REQUESTS_FILE = "requests.jsonl"


class RequestLog:
    """requests.jsonl: one fsynced line per request sent and per reply (with its usage), written
    by the worker threads under a lock. Billed tokens are summed from it by `billed_tokens`."""

    def __init__(self, path: Path):
        self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - open for the run; close() ends it
        self._lock = threading.Lock()

    def append(self, event: dict[str, Any]) -> None:
        line = json.dumps({**event, "t": round(time.time(), 3)}) + "\n"
        with self._lock:
            if self._file.closed:  # a daemon worker finishing after the run ended
                return
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()


def billed_tokens(path: Path) -> dict[str, int] | None:
    """Tokens of every reply in requests.jsonl, and the requests that got no reply or no usage.

    None when the file does not exist (a journal from before it was kept)."""
    if not Path(path).exists():
        return None
    sent, answered = set(), set()
    tokens = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "unknown": 0}
    for event in read_jsonl(path):
        if event.get("event") == "sent":
            sent.add(event["request"])
            continue
        answered.add(event["request"])
        if event.get("event") == "reply":
            tokens["requests"] += 1
            usage = event.get("usage")
            if usage is None:
                tokens["unknown"] += 1
            else:
                tokens["prompt_tokens"] += usage["prompt_tokens"]
                tokens["completion_tokens"] += usage["completion_tokens"]
    tokens["unknown"] += len(sent - answered)
    return tokens


class _Tasks:
    """Filter steps before new generations, so units finish (and stop costing memory) early."""

    def __init__(self):
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = 0
        self._lock = threading.Lock()

    def put(self, task) -> None:
        with self._lock:
            self._order += 1
            order = self._order
        rank = 2 if task is None else (0 if task[0] == "filter" else 1)
        self._queue.put((rank, order, task))

    def get(self):
        return self._queue.get()[2]


def _worker(tasks: _Tasks, results: queue.Queue, work, stop: threading.Event) -> None:
    while not stop.is_set():
        task = tasks.get()
        if task is None:
            return
        try:
            results.put(("ok", task, work(task)))
        except RetriesExhausted as err:
            results.put(("failed", task, err))
        except Stopped:
            return
        except BaseException as err:  # fatal (ChatAPIError, a bug): the main thread re-raises it
            results.put(("fatal", task, err))
            return


def _collect(config, units: int, tasks, results, state: State, journal) -> None:
    """Journal each result as it arrives, queue filter steps, and show progress."""
    counts = {"pairs": 0, "failed": 0}
    with progress() if config.show_progress else _NoProgress() as bar:
        task_id = bar.add_task("make-mi", total=units, status="")
        remaining = units
        while remaining:
            try:
                status, task, payload = results.get(timeout=0.2)  # timeout: lets Ctrl-C through
            except queue.Empty:
                continue
            if status == "fatal":
                raise payload
            if status == "failed":
                record = {
                    "type": "failed",
                    "id": task[1].id,
                    "kind": task[2],
                    "stage": task[0],
                    "reason": payload.reason,
                    "detail": payload.detail,
                    "usage": payload.usage,
                    "attempts": payload.attempts,
                }
                counts["failed"] += 1
            else:
                record = payload
            journal.append(record)
            state.add(record)
            if record["type"] == "generated":
                tasks.put(("filter", task[1], task[2], record))
                continue
            remaining -= 1
            if record["type"] == "filtered":
                counts["pairs"] += sum(v["faithful"] for v in record["verdicts"])
            tokens = state.tokens["prompt_tokens"] + state.tokens["completion_tokens"]
            bar.update(
                task_id, advance=1, status=f"pairs {counts['pairs']}  failed {counts['failed']}  tokens {tokens:,}"
            )


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass
