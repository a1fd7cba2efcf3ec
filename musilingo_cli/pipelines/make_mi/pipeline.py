"""Music Instruct (MI) data from captions, as in the paper (Section 2.2): a chat model writes
question-answer pairs for each caption (generation prompt), a second prompt judges each pair
faithful to the caption or not, negatives and outliers are dropped, and the rest is written in
the official MI JSON schema.

    captions -> [generate] -> journal "generated" -> [rules + filter] -> journal "filtered"
             -> music_instruct_{kind}.json, rejects.jsonl, summary.json   (rebuilt from the journal)

Every API result is journaled (fsynced) the moment it arrives, so a crash loses at most the
requests in flight: a rerun skips finished (caption, kind) units and, for a unit whose pairs were
generated but not yet filtered, sends only the filter request. The final files are derived from
the journal alone and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from musilingo_cli.data.captions import Caption, read_captions
from musilingo_cli.core.errors import ConfigError
from musilingo_cli.core.journal import atomic_write_text

KINDS = ("short", "long")

# USD per 1M tokens (input, output), as of 2026 -- edit if needed, or pass --price-input/--price-output.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}

# Per kind: pairs asked for (paper: ~5 short, ~6 long per caption), answer length bounds in
# words, and rough output tokens per pair for the dry-run estimate.
KIND_DEFAULTS = {
    "short": {"pairs": 5, "min_words": 1, "max_words": 60, "tokens_per_pair": 45},
    "long": {"pairs": 6, "min_words": 15, "max_words": 250, "tokens_per_pair": 130},
}
FILTER_TOKENS_PER_PAIR = 25


@dataclass
class MakeMIConfig:
    """Everything `musilingo make-mi` needs; the API key is read from OPENAI_API_KEY in `run`."""

    captions: Path
    out: Path = Path("mi")
    kinds: tuple[str, ...] = KINDS
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_file: Path | None = None  # else OPENAI_API_KEY; the key itself is never stored here
    id_column: str = "ytid"
    caption_column: str = "caption"
    split_column: str | None = "is_audioset_eval"
    prompt_short: str = "short"
    prompt_long: str = "long"
    filter_prompt: str = "filter"
    concurrency: int = 4
    requests_per_minute: float | None = 500
    limit: int | None = None
    seed: int | None = 0
    temperature: float | None = 0.7
    timeout: float = 60.0
    max_retries: int = 6
    retry_base: float = 1.0
    retry_max: float = 60.0
    retry_failed: bool = True
    dry_run: bool = False
    price_input: float | None = None
    price_output: float | None = None
    pairs: dict[str, int] = field(default_factory=dict)
    answer_words: dict[str, tuple[int, int]] = field(default_factory=dict)
    min_overlap: float = 0.2
    show_progress: bool = True

    def pairs_for(self, kind: str) -> int:
        return self.pairs.get(kind, KIND_DEFAULTS[kind]["pairs"])

    def words_for(self, kind: str) -> tuple[int, int]:
        d = KIND_DEFAULTS[kind]
        return self.answer_words.get(kind, (d["min_words"], d["max_words"]))


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    """A prompt file: `[system]` and `[user]` sections with `{placeholders}`."""

    name: str
    sha256: str
    system: str
    user: str

    def messages(self, **values: Any) -> list[dict[str, str]]:
        """Chat messages with placeholders filled (plain replace, so JSON braces stay literal)."""
        return [{"role": "system", "content": _fill(self.system, values)}, {"role": "user", "content": _fill(self.user, values)}]


def _fill(template: str, values: dict[str, Any]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def load_prompt(spec: str) -> Prompt:
    """A prompt by name (`short` -> prompts/make_mi_short.txt in the package) or by file path."""
    path = Path(spec)
    if path.suffix == ".txt" or os.sep in spec or path.is_file():
        if not path.is_file():
            raise ConfigError(f"prompt file {spec} not found")
        text, name = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = resources.files("musilingo_cli.prompts") / f"make_mi_{spec}.txt"
        if not resource.is_file():
            known = sorted(p.name[8:-4] for p in resources.files("musilingo_cli.prompts").iterdir() if p.name.startswith("make_mi_"))
            raise ConfigError(f"no prompt named '{spec}'; known: {', '.join(known)}, or pass a .txt path")
        text, name = resource.read_text(encoding="utf-8"), spec
    sections = _sections(text)
    if "system" not in sections or "user" not in sections:
        raise ConfigError(f"prompt {name}: needs a [system] and a [user] section")
    return Prompt(name, hashlib.sha256(text.encode()).hexdigest(), sections["system"], sections["user"])


def _sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.fullmatch(r"\[(system|user)\]\s*", line)
        if header:
            current = header.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        # lines before the first section are comments for the editor of the file
    return {k: "\n".join(v).strip() for k, v in sections.items()}


# ---------------------------------------------------------------- parsing replies and rules


def parse_pairs(data: Any) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Pairs from a generation reply, and items that were not pairs (kept as rejects).

    Accepts {"pairs": [...]}, a bare list, or any object with a single list of pairs.
    Raises UnparseableReply when there is no list at all.
    """
    from musilingo_cli.pipelines.chat_api import UnparseableReply

    items = data
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        items = data.get("pairs", lists[0] if len(lists) == 1 else None)
    if not isinstance(items, list):
        raise UnparseableReply("expected {\"pairs\": [...]}")
    pairs, bad = [], []
    for item in items:
        if isinstance(item, dict):
            q = item.get("question", item.get("q"))
            a = item.get("answer", item.get("a"))
            if isinstance(q, str) and isinstance(a, str):
                pairs.append({"question": q.strip(), "answer": a.strip()})
                continue
        bad.append({"item": item, "reason": "unparseable"})
    if not pairs and not bad:
        raise UnparseableReply("an empty list of pairs")
    return pairs, bad


_STOP = set(
    """a an the and or but if of to in on at by for with from as is are was were be been being it its this that
    these those there here than then so such very also just can could may might will would should there's it's
    which who whom what when where why how not no yes do does did has have had i you he she they we his her their
    our your my me him them us one two some any all more most much many other into over under about while during
    up down out off only own same too both each few again further once sound sounds like song music piece track
    clip recording played playing plays play heard hear hearing can feel feels""".split()
)
_MENTIONS_TEXT = re.compile(r"\b(captions?|the text|the description|as described|described in)\b", re.IGNORECASE)


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if len(w) > 2 and w not in _STOP}


def _stem(word: str) -> str:
    # Crude on purpose: enough to match "drums"/"drum", "played"/"playing"; no dependency.
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def rule_rejects(pairs: list[dict[str, str]], caption: str, kind: str, config: MakeMIConfig) -> dict[int, str]:
    """Deterministic outlier rules, index -> reason; pairs not listed go on to the LLM filter."""
    lo, hi = config.words_for(kind)
    caption_words = _content_words(caption)
    seen: set[str] = set()
    rejects: dict[int, str] = {}
    for i, pair in enumerate(pairs):
        q, a = pair["question"], pair["answer"]
        norm_q = " ".join(re.findall(r"[a-z0-9]+", q.lower()))
        n_words = len(a.split())
        if not q or not a:
            rejects[i] = "empty"
        elif norm_q in seen:
            rejects[i] = "duplicate_question"
        elif _MENTIONS_TEXT.search(q) or _MENTIONS_TEXT.search(a):
            rejects[i] = "mentions_caption"
        elif n_words < lo or n_words > hi:
            rejects[i] = "answer_length"
        elif _off_caption(a, q, caption_words, config.min_overlap):
            rejects[i] = "off_caption"
        seen.add(norm_q)
    return rejects


def _off_caption(answer: str, question: str, caption_words: set[str], min_overlap: float) -> bool:
    """Heuristic: too few of the answer's content words (beyond the question's) are in the caption."""
    words = _content_words(answer) - _content_words(question)
    if len(words) < 3:  # "Yes, a male voice." has too little to judge
        return False
    return len(words & caption_words) / len(words) < min_overlap


def parse_verdicts(data: Any, n: int) -> list[dict[str, Any]]:
    """Verdicts from a filter reply, one per index 1..n; raises UnparseableReply otherwise."""
    from musilingo_cli.pipelines.chat_api import UnparseableReply

    items = data.get("verdicts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise UnparseableReply("expected {\"verdicts\": [...]}")
    verdicts: dict[int, dict[str, Any]] = {}
    for position, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise UnparseableReply("a verdict that is not an object")
        index = item.get("index", position)
        faithful = _as_bool(item.get("faithful", item.get("verdict")))
        if not isinstance(index, int) or faithful is None:
            raise UnparseableReply(f"verdict {position} lacks an integer index or a true/false 'faithful'")
        verdicts[index] = {"faithful": faithful, "reason": str(item.get("reason", ""))[:200]}
    missing = [i for i in range(1, n + 1) if i not in verdicts]
    if missing:
        raise UnparseableReply(f"no verdict for pairs {missing}")
    return [verdicts[i] for i in range(1, n + 1)]


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in {"true", "yes", "faithful", "positive"}:
            return True
        if v in {"false", "no", "unfaithful", "negative", "not faithful"}:
            return False
    return None


# ---------------------------------------------------------------- one unit of work


def _key(record: dict[str, Any]) -> str:
    return f"{record['type']}:{record['kind']}:{record['id']}"


def _generate(client, prompt: Prompt, caption: Caption, kind: str, config: MakeMIConfig) -> dict[str, Any]:
    """One generation request -> a `generated` journal record."""
    found: dict[str, Any] = {}

    def validate(data):
        found["pairs"], found["bad"] = parse_pairs(data)

    reply = client.chat_json(prompt.messages(caption=caption.text, n=config.pairs_for(kind)), validate)
    return {
        "type": "generated", "id": caption.id, "kind": kind, "caption": caption.text,
        "is_audioset_eval": caption.is_eval, "meta": caption.extra,
        "pairs": found["pairs"], "bad_items": found["bad"], "raw": reply.text,
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
        "attempts": reply.attempts, "model": config.model, "prompt": prompt.name, "prompt_sha256": prompt.sha256,
    }


def _filter(client, prompt: Prompt | None, generated: dict[str, Any], config: MakeMIConfig) -> dict[str, Any]:
    """Rules, then one filter request for the pairs that pass them -> a `filtered` journal record."""
    rules = rule_rejects(generated["pairs"], generated["caption"], generated["kind"], config)
    sent = [i for i in range(len(generated["pairs"])) if i not in rules]
    record = {
        "type": "filtered", "id": generated["id"], "kind": generated["kind"],
        "rules": [{"index": i, "reason": r} for i, r in sorted(rules.items())], "verdicts": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0}, "attempts": 0, "raw": None,
        "filter_prompt": prompt.name if prompt else None, "filter_prompt_sha256": prompt.sha256 if prompt else None,
    }
    if not sent:  # nothing left to judge: no request, no cost
        return record
    listed = [{"index": k + 1, **generated["pairs"][i]} for k, i in enumerate(sent)]
    found: dict[str, Any] = {}

    def validate(data):
        found["verdicts"] = parse_verdicts(data, len(sent))

    messages = prompt.messages(caption=generated["caption"], pairs=json.dumps(listed, ensure_ascii=False, indent=1), n=len(sent))
    reply = client.chat_json(messages, validate)
    record["verdicts"] = [{"index": i, **v} for i, v in zip(sent, found["verdicts"])]
    record["usage"] = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
    record["attempts"], record["raw"] = reply.attempts, reply.text
    return record


# ---------------------------------------------------------------- the run


@dataclass
class _State:
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


def run(config: MakeMIConfig) -> dict[str, Any]:
    """Generate, filter and write MI files; returns the summary (also written to summary.json).

    With `dry_run`, returns the prompts and the estimate and sends nothing.
    """
    _check(config)
    caption_set = read_captions(config.captions, config.id_column, config.caption_column, config.split_column)
    captions = caption_set.captions[: config.limit] if config.limit else caption_set.captions
    prompts = {kind: load_prompt(getattr(config, f"prompt_{kind}")) for kind in config.kinds}
    filter_prompt = load_prompt(config.filter_prompt)
    if config.dry_run:
        return dry_run_report(config, captions, prompts, filter_prompt, caption_set.skipped_empty)

    from musilingo_cli.core.journal import Journal

    config.out.mkdir(parents=True, exist_ok=True)
    with Journal(config.out / "journal.jsonl", _key) as journal:
        state = _State()
        for record in journal.records:
            state.add(record)
        todo = _plan(captions, config, state)
        _execute(config, todo, state, journal, prompts, filter_prompt)
    summary = write_outputs(config.out, config, skipped_empty=caption_set.skipped_empty)
    return summary


def _check(config: MakeMIConfig) -> None:
    if not config.kinds or any(k not in KINDS for k in config.kinds):
        raise ConfigError(f"--kind must be short, long or both; got {config.kinds}")
    if config.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if config.limit is not None and config.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if config.max_retries < 0:
        raise ConfigError("--max-retries must be 0 or more")
    for kind in config.kinds:
        lo, hi = config.words_for(kind)
        if lo > hi:
            raise ConfigError(f"answer word bounds for {kind} are {lo}-{hi}: the minimum exceeds the maximum")


def _plan(captions: list[Caption], config: MakeMIConfig, state: _State) -> list[tuple[str, Caption, str]]:
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


def _execute(config, todo, state: _State, journal, prompts, filter_prompt) -> None:
    """Run the units on `concurrency` worker threads; only this thread writes the journal."""
    from musilingo_cli.pipelines.chat_api import ChatClient, ChatSettings, read_api_key

    if not todo:
        return
    stop = threading.Event()
    settings = ChatSettings(
        model=config.model, base_url=config.base_url or os.environ.get("OPENAI_BASE_URL") or None,
        api_key=read_api_key(config.api_key_file), timeout=config.timeout, max_retries=config.max_retries,
        retry_base=config.retry_base, retry_max=config.retry_max, requests_per_minute=config.requests_per_minute,
        temperature=config.temperature, seed=config.seed,
    )
    client = ChatClient(settings, stop, rng_seed=config.seed)
    tasks = _Tasks()
    results: queue.Queue = queue.Queue()
    for kind_of_task, caption, kind in todo:
        tasks.put((kind_of_task, caption, kind, state.generated.get((caption.id, kind))))

    def work(task):
        kind_of_task, caption, kind, generated = task
        if kind_of_task == "generate":
            return _generate(client, prompts[kind], caption, kind, config)
        return _filter(client, filter_prompt, generated, config)

    workers = [threading.Thread(target=_worker, args=(tasks, results, work, stop), daemon=True) for _ in range(config.concurrency)]
    for w in workers:
        w.start()
    try:
        _collect(config, len(todo), tasks, results, state, journal)
    finally:
        # Daemon workers: an in-flight request must not hold up Ctrl-C; what finished is journaled.
        stop.set()
        for _ in workers:
            tasks.put(None)


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
    from musilingo_cli.pipelines.chat_api import RetriesExhausted, Stopped

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


def _collect(config, units: int, tasks, results, state: _State, journal) -> None:
    """Journal each result as it arrives, queue filter steps, and show progress."""
    from musilingo_cli.core.console import progress

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
                record = {"type": "failed", "id": task[1].id, "kind": task[2], "stage": task[0],
                          "reason": payload.reason, "detail": payload.detail, "usage": payload.usage}
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
            bar.update(task_id, advance=1, status=f"pairs {counts['pairs']}  failed {counts['failed']}  tokens {tokens:,}")


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass


# ---------------------------------------------------------------- outputs, from the journal alone


def assemble(records: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], _State]:
    """MI items per kind and rejects, rebuilt from journal records (no request needed)."""
    state = _State()
    for record in records:
        state.add(record)
    items: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    rejects: list[dict[str, Any]] = []
    for unit in sorted(state.generated):
        gen = state.generated[unit]
        base = {"ytid": gen["id"], "kind": gen["kind"], "model": gen["model"], "prompt": gen["prompt"], "prompt_sha256": gen["prompt_sha256"]}
        for bad in gen.get("bad_items", []):
            rejects.append({**base, "reason": bad["reason"], "item": bad["item"]})
        filt = state.filtered.get(unit)
        if filt is None:
            continue
        verdicts = {v["index"]: v for v in filt["verdicts"]}
        rules = {r["index"]: r["reason"] for r in filt["rules"]}
        for i, pair in enumerate(gen["pairs"]):
            verdict = verdicts.get(i)
            if i in rules or verdict is None or not verdict["faithful"]:
                reason = rules.get(i) or "filter_negative"
                extra = {"filter_reason": verdict["reason"]} if verdict else {}
                rejects.append({**base, **pair, "reason": reason, **extra})
                continue
            items[gen["kind"]].append(_mi_item(gen, pair, i, filt))
    for unit, fail in sorted(state.failed.items()):
        rejects.append({"ytid": unit[0], "kind": unit[1], "reason": f"failed_{fail['stage']}:{fail['reason']}", "detail": fail["detail"]})
    return items, rejects, state


def _mi_item(gen: dict[str, Any], pair: dict[str, str], index: int, filt: dict[str, Any]) -> dict[str, Any]:
    item = {
        "question": pair["question"], "answer": pair["answer"], "ytid": gen["id"],
        "is_audioset_eval": bool(gen["is_audioset_eval"]),
    }
    meta = gen.get("meta") or {}
    for key in ("start_s", "end_s", "sampling_rate"):
        if key in meta:
            item[key] = meta[key]
    item.update({
        "caption": gen["caption"], "kind": gen["kind"], "pair_index": index,
        "model": gen["model"], "prompt": gen["prompt"], "prompt_sha256": gen["prompt_sha256"],
        "filter_prompt": filt["filter_prompt"], "filter_prompt_sha256": filt["filter_prompt_sha256"],
    })
    return item


def write_outputs(out: Path, config: MakeMIConfig, skipped_empty: int = 0) -> dict[str, Any]:
    """Write music_instruct_{kind}[_train|_test].json, rejects.jsonl and summary.json atomically."""
    from musilingo_cli.core.journal import read_jsonl

    items, rejects, state = assemble(read_jsonl(out / "journal.jsonl"))
    files = []
    for kind in KINDS:
        if not items[kind] and kind not in config.kinds:
            continue
        files.append(_write_json(out / f"music_instruct_{kind}.json", {"QA": items[kind]}))
        for split, is_eval in (("train", False), ("test", True)):
            part = [it for it in items[kind] if it["is_audioset_eval"] == is_eval]
            files.append(_write_json(out / f"music_instruct_{kind}_{split}.json", {"QA": part}))
    atomic_write_text(out / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    summary = _summary(config, items, rejects, state, skipped_empty)
    summary["files"] = [str(f) for f in files] + [str(out / "rejects.jsonl"), str(out / "summary.json")]
    _write_json(out / "summary.json", summary)
    return summary


def _summary(config, items, rejects, state: _State, skipped_empty: int) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for r in rejects:
        if not r["reason"].startswith("failed_"):
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    generated = sum(len(g["pairs"]) + len(g.get("bad_items", [])) for g in state.generated.values())
    cost = estimate_cost(config, state.tokens["prompt_tokens"], state.tokens["completion_tokens"])
    return {
        "captions_skipped_empty": skipped_empty,
        "units_done": len(state.filtered),
        "units_failed": len(state.failed),
        "failed": [{"ytid": u[0], "kind": u[1], "stage": f["stage"], "reason": f["reason"]} for u, f in sorted(state.failed.items())],
        "pairs_generated": generated,
        "pairs_kept": {kind: len(v) for kind, v in items.items()},
        "pairs_rejected": sum(by_reason.values()),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "tokens": dict(state.tokens),
        "estimated_cost_usd": cost,
        "model": config.model,
    }


def _write_json(path: Path, obj: Any) -> Path:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")
    return path


# ---------------------------------------------------------------- cost and dry run


def prices_for(config: MakeMIConfig) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: the flags, else the table (longest matching name), else None."""
    known = next((PRICES[m] for m in sorted(PRICES, key=len, reverse=True) if config.model.startswith(m)), None)
    if config.price_input is None and config.price_output is None:
        return known
    base = known or (0.0, 0.0)
    return (config.price_input if config.price_input is not None else base[0], config.price_output if config.price_output is not None else base[1])


def estimate_cost(config: MakeMIConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for these tokens, or None for a model with no known price (pass --price-input/--price-output)."""
    prices = prices_for(config)
    if prices is None:
        return None
    return round((prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6, 6)


def estimate_tokens(text: str) -> int:
    """About 4 characters per token for English (a heuristic; real tokenizers differ by ~10%)."""
    return max(1, len(text) // 4)


def dry_run_report(config, captions, prompts, filter_prompt, skipped_empty: int) -> dict[str, Any]:
    """The prompts for the first caption and an estimate of tokens and cost for the whole run."""
    prompt_tokens = completion_tokens = 0
    for caption in captions:
        for kind in config.kinds:
            n = config.pairs_for(kind)
            gen_out = n * KIND_DEFAULTS[kind]["tokens_per_pair"]
            messages = prompts[kind].messages(caption=caption.text, n=n)
            prompt_tokens += sum(estimate_tokens(m["content"]) for m in messages)
            filt = filter_prompt.messages(caption=caption.text, pairs="", n=n)
            prompt_tokens += sum(estimate_tokens(m["content"]) for m in filt) + gen_out
            completion_tokens += gen_out + n * FILTER_TOKENS_PER_PAIR
    example = {}
    if captions:
        first = captions[0]
        for kind in config.kinds:
            example[kind] = prompts[kind].messages(caption=first.text, n=config.pairs_for(kind))
        example["filter"] = filter_prompt.messages(caption=first.text, pairs='[{"index": 1, "question": "...", "answer": "..."}]', n=1)
    return {
        "dry_run": True,
        "captions": len(captions),
        "captions_skipped_empty": skipped_empty,
        "kinds": list(config.kinds),
        "requests": 2 * len(captions) * len(config.kinds),
        "estimated_tokens": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "estimated_cost_usd": estimate_cost(config, prompt_tokens, completion_tokens),
        "model": config.model,
        "prompts": {kind: {"name": p.name, "sha256": p.sha256} for kind, p in {**prompts, "filter": filter_prompt}.items()},
        "example_messages": example,
    }
