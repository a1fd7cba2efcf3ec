"""`musilingo ask`: answer questions about audio files, one song or a catalogue of thousands.

    items (file x question, stable ids) -> skip ids already in the output file (locked: one writer)
      -> decode the first --max-seconds + resample in threads, read-ahead bounded in seconds of audio
         (batching.decode_ahead), cut into --chunk-seconds chunks
      -> check each prompt against the LLM's context                      (model.context)
      -> encode equal-length chunks together, concatenate per file       (batching.encode_clips_safely)
         the encoder thread gathers and encodes window n+1 while the main thread generates window n
      -> generate for --batch-size items at once, sorted by length       (model.generate, left padding)
      -> one record per item, flushed as written, fsynced per batch       (journal.Journal)

Any failure of one item (a bad or unreadable file, a decoder's own exception, an encoder or
generation error, a prompt over the context) becomes that item's error record and the run goes
on; an encoder out of memory retries the window in smaller pieces first. Ctrl-C stops at once.
Records are written as soon as their generation batch finishes, so a crash or Ctrl-C loses nothing
already answered; rerunning with the same output file answers only what is missing.
Under torchrun each rank answers its own share of the items into a part file and rank 0 merges
them at the end (pipelines/ask_shards.py); a rerun with any number of ranks resumes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.console import progress, stderr, warn
from musilingo_cli.core.errors import ConfigError
from musilingo_cli.core.interrupts import sticky_interrupt
from musilingo_cli.core.journal import Journal
from musilingo_cli.data.inputs import Item, expand_paths, items_for, read_manifest
from musilingo_cli.model.config import CAPTION_INSTRUCTION
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.model.structured import read_schema
from musilingo_cli.pipelines.answering import answer_all
from musilingo_cli.pipelines.ask_shards import Parts, Shard, device_for, latest_records, owner, part_files


@dataclass
class AskConfig:
    """Everything `musilingo ask` needs; defaults are the command line's.

    Attributes:
        inputs: audio files, directories (searched recursively) and globs.
        questions: asked about every input (and about manifest rows without a question).
        caption: also ask the paper's captioning instruction.
        manifest: CSV/TSV/JSONL with `path` and optional `question`, `id`.
        model / encoder / llm: what `model.loader.load_model` takes; encoder + llm alone = untrained adapter.
        output: JSONL file written as items finish; rerunning resumes it.
        device / dtype / encoder_dtype: None = cuda + bf16 when available, else cpu + fp32.
        batch_size / encoder_batch_size: items generated / chunks encoded at once (None = by device).
        preset / max_new_tokens / seed: how answers are decoded (GenerationSettings).
        chunk_seconds / max_seconds: how long audio is cut and how much of it is used.
        compile: torch.compile the decoding step (None = on for cuda, off elsewhere); on CUDA the
            step is replayed as a CUDA graph either way.
        workers: decoding threads (None = one per core, at most 8).
        retry_errors: answer again items whose record in `output` is an error.
        on_record: called with each record as it is written (the CLI prints with it).
        generate_options: GenerationSettings overrides (library use, e.g. the benchmark's
            `min_new_tokens`).
        json_schema / quantize: see the fields' comments.
        launcher: under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set), answer only this rank's share
            into a part file beside `output` and merge the parts at the end (pipelines/ask_shards.py);
            off for library callers (eval), on for the `ask` command.
    """

    inputs: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    caption: bool = False
    manifest: Path | None = None
    model: str | None = None
    encoder: str | None = None
    llm: str | None = None
    output: Path | None = None
    device: str | None = None
    dtype: str | None = None
    encoder_dtype: str | None = None
    batch_size: int | None = None
    encoder_batch_size: int | None = None
    preset: str = "official"
    max_new_tokens: int | None = None
    seed: int = 0
    chunk_seconds: float = 30.0
    max_seconds: float | None = None
    compile: bool | None = None
    workers: int | None = None
    retry_errors: bool = False
    on_record: Callable[[dict[str, Any]], None] | None = None
    generate_options: dict[str, Any] = field(default_factory=dict)
    json_schema: str | None = None  # a JSON Schema file or a bundled name (catalogue): answers follow it
    quantize: str | None = None  # 8bit | 4bit: the LLM through bitsandbytes (model/llm.py)
    launcher: bool = False  # take RANK/WORLD_SIZE/LOCAL_RANK from torchrun and share the items (the CLI's ask)


def run(config: AskConfig, model=None) -> dict[str, Any]:
    """Answer every (audio, question) item; return a summary (counts, output path, timing).

    `model` (a ready MusiLingo) skips loading what config.model/encoder/llm name; the device and
    dtype settings then only pick defaults such as the batch size. With `config.launcher` under
    torchrun (or beside part files a sharded run left) the items are shared out (ask_shards).
    Raises ConfigError for a sharded run without an output file.
    """
    shard = Shard.from_env() if config.launcher else Shard()
    config = resolve_config(dataclasses.replace(config, device=device_for(config.device, shard)))
    schema = read_schema(config.json_schema) if config.json_schema else None  # checked before any model loads
    settings = GenerationSettings.from_preset(
        config.preset, max_new_tokens=config.max_new_tokens, json_schema=schema, **config.generate_options
    )
    items = collect_items(config)
    if config.output is None and shard.world > 1:
        raise ConfigError("several ranks need an output file to share: pass -o FILE.jsonl (each rank writes a part)")
    # one rank alone (no launcher, or torchrun with one process) is a plain run unless part files are left
    sharded = config.output is not None and (shard.world > 1 or bool(part_files(config.output)))
    parts = Parts(config.output, shard, config.device) if sharded else None
    try:
        mine = parts.own(items) if parts else items
        path = parts.path if parts else config.output
        journal = Journal(path, key=lambda r: r["id"], lock=True) if path else None
        earlier = parts.answered_elsewhere() if parts else []
        try:
            summary = _answer_items(config, model, settings, mine, journal, earlier)
        finally:
            if journal is not None:
                journal.close()
                if config.retry_errors and not parts:
                    _compact(journal.path)
        if parts:
            summary.update(rank=shard.rank, world=shard.world, merged=parts.finish([i.id for i in items]))
        return summary
    finally:
        if parts is not None:
            parts.close()


def _answer_items(config: AskConfig, model, settings, items: list[Item], journal, earlier: list[dict]) -> dict:
    """Answer what `items` still lacks (not in `journal` nor in `earlier` records) into `journal`."""
    records = earlier + (journal.records if journal is not None else [])
    todo, skipped, failed_before = _pending(items, records if journal is not None else None, config.retry_errors)
    summary = {
        "items": len(items),
        "skipped_done": skipped,
        "failed_before": failed_before,
        "answered": 0,
        "failed": 0,
        "output": str(config.output) if config.output else None,
    }
    if not todo:
        return {**summary, "seconds": 0.0, "model": None}
    started = time.perf_counter()
    model = model if model is not None else load_for(config)
    _seed(config.seed)
    spec = model_spec(config)
    _warn_other_model(records, config.output, spec)
    stamp = {"model": spec, "settings": settings.to_dict(), "seed": config.seed}
    writer = Writer(journal, config.on_record, summary)
    try:
        with progress() as bar, sticky_interrupt() as interrupted:
            task = bar.add_task("ask", total=len(todo), status="")

            def advance() -> None:
                bar.advance(task)
                interrupted()  # a Ctrl-C that Python swallowed (in a __del__) still stops the job here

            writer.advance = advance
            answer_all(model, todo, config, settings, stamp, writer)
    except KeyboardInterrupt:
        if journal is not None:
            warn(
                f"interrupted: {summary['answered'] + summary['failed']} new records are safe in {journal.path}; "
                "rerun the same command to answer the rest"
            )
        raise
    summary.update(seconds=round(time.perf_counter() - started, 3), model=spec)
    return summary


def collect_items(config: AskConfig) -> list[Item]:
    """The (audio, question) items of a run, in input order, duplicates (same id) dropped."""
    questions = list(config.questions) + ([CAPTION_INSTRUCTION] if config.caption else [])
    items: list[Item] = []
    if config.manifest is not None:
        items += read_manifest(config.manifest, questions)
    if config.inputs:
        if not questions:
            raise ConfigError(
                'no question: put it after the audio files (musilingo ask song.wav "What genre?"), '
                "or pass -q QUESTION or --caption"
            )
        items += items_for(expand_paths(config.inputs), questions)
    if not items:
        raise ConfigError("nothing to answer: give audio files, directories or globs, or --manifest FILE")
    seen: set[str] = set()
    return [i for i in items if not (i.id in seen or seen.add(i.id))]


def own_items(config: AskConfig) -> list[Item]:
    """The items this process answers: all of them, or under torchrun (`config.launcher`) its rank's share."""
    items = collect_items(config)
    shard = Shard.from_env() if config.launcher else Shard()
    return [i for i in items if owner(i.id, shard.world) == shard.rank] if shard.world > 1 else items


def model_spec(config: AskConfig) -> str:
    """The model as a record names it: --model, plus any --encoder/--llm override."""
    parts = [config.model or "untrained-adapter"]
    parts += [f"encoder={config.encoder}"] if config.encoder else []
    parts += [f"llm={config.llm}"] if config.llm else []
    parts += [f"quantize={config.quantize}"] if config.quantize else []
    return " ".join(parts)


# --- set-up ---------------------------------------------------------------------------------


def resolve_config(config: AskConfig) -> AskConfig:
    """Fill the device-dependent defaults and check numbers a user typed (chat and serve use it too).
    Raises ConfigError for a CUDA device without CUDA or a number out of range."""
    import torch

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available in this torch build/machine; use --device cpu")
    dtype = config.dtype or ("bf16" if on_cuda else "fp32")
    for name, value in (
        ("--batch-size", config.batch_size),
        ("--encoder-batch-size", config.encoder_batch_size),
        ("--workers", config.workers),
        ("--max-new-tokens", config.max_new_tokens),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}")
    if config.chunk_seconds <= 0 or (config.max_seconds is not None and config.max_seconds <= 0):
        raise ConfigError("--chunk-seconds and --max-seconds must be positive numbers of seconds")
    return dataclasses.replace(
        config,
        device=device,
        dtype=dtype,
        encoder_dtype=config.encoder_dtype or dtype,
        batch_size=config.batch_size or (128 if on_cuda else 8),
        encoder_batch_size=config.encoder_batch_size or (16 if on_cuda else 8),
        workers=config.workers or min(8, os.cpu_count() or 1),
        compile=on_cuda if config.compile is None else config.compile,
    )


def load_for(config: AskConfig):
    """The MusiLingo a resolved config names (model, encoder, llm, device, dtypes), seeded fresh adapter
    included; chat and serve load their model through this too."""
    from musilingo_cli.model.loader import load_model

    _seed(config.seed)  # a fresh adapter (no --model) is initialised from --seed: identical runs agree
    model = load_model(
        config.model,
        encoder=config.encoder,
        llm=config.llm,
        device=config.device,
        dtype=config.dtype,
        encoder_dtype=config.encoder_dtype,
        quantize=config.quantize,
    )
    if model.encoder is None:
        raise ConfigError("this model has no audio encoder; pass --encoder")
    return model


def resolve_and_load(options, model=None) -> tuple[AskConfig, object]:
    """(resolved AskConfig, model) for chat and serve, from their config's model, encoder, llm,
    device, dtype, encoder_dtype and max_new_tokens read as `ask` reads them; the model is
    loaded (load_for) unless given. Raises ConfigError as resolve_config and load_for do."""
    resolved = resolve_config(
        AskConfig(
            model=options.model,
            encoder=options.encoder,
            llm=options.llm,
            device=options.device,
            dtype=options.dtype,
            encoder_dtype=options.encoder_dtype,
            max_new_tokens=options.max_new_tokens,
        )
    )
    return resolved, model if model is not None else load_for(resolved)


def _seed(seed: int) -> None:
    """Seed sampling once per run (batched sampling is not bit-identical to one-at-a-time)."""
    import torch

    torch.manual_seed(seed)


def _pending(items: list[Item], records: list[dict] | None, retry_errors: bool) -> tuple[list[Item], int, int]:
    """(items still to answer, items skipped as done, how many of those are error records).

    Done means recorded (`records`: the output file's, and part files'); with retry_errors an error
    record does not count. None: no output file, everything is to do."""
    if records is None:
        return items, 0, 0
    last = latest_records(records)
    done = {k for k, r in last.items() if not (retry_errors and r.get("error"))}
    todo = [i for i in items if i.id not in done]
    failed_before = sum(1 for i in items if i.id in done and last[i.id].get("error"))
    return todo, len(items) - len(todo), failed_before


def _warn_other_model(records: list[dict], output: Path | None, spec: str) -> None:
    others = sorted({r.get("model") for r in records} - {spec})
    if others:
        warn(
            f"{output} already holds answers from {', '.join(map(str, others))}; they are kept and "
            f"skipped, new answers come from {spec} (use another -o file to keep runs apart)"
        )


# --- the pipeline -----------------------------------------------------------------------------


class Writer:
    """Writes each record (journal, callback, error line) and keeps the summary's counts."""

    def __init__(self, journal: Journal | None, on_record, summary: dict[str, Any]):
        self.journal, self.on_record, self.summary = journal, on_record, summary
        self.advance: Callable[[], None] = lambda: None

    def write(self, record: dict[str, Any], announce: bool = True) -> None:
        """Append `record` (flushed; `sync` fsyncs); an error is also told on stderr in one line (once
        per file: `announce`)."""
        if self.journal is not None:
            self.journal.append(record, sync=False)
        if record["error"]:
            self.summary["failed"] += 1
            if announce:
                stderr.print(
                    f"musilingo: {record['audio']}: {record['error']}", markup=False, highlight=False, soft_wrap=True
                )
        else:
            self.summary["answered"] += 1
        if self.on_record is not None:
            self.on_record(record)
        self.advance()

    def sync(self) -> None:
        """fsync the records written so far (once per generation batch)."""
        if self.journal is not None:
            self.journal.sync()


def _compact(path: Path) -> None:
    """Keep only the last record per id (after --retry-errors answered some again); atomic."""
    from musilingo_cli.core.journal import read_jsonl, rewrite_jsonl

    records = read_jsonl(path)
    last = {r["id"]: r for r in records}
    if len(last) != len(records):
        rewrite_jsonl(path, last.values())


def answer(paths, questions, model=None, **options: Any) -> list[dict[str, Any]]:
    """What `musilingo ask` does, as one call: every audio file in `paths` (files, folders, globs)
    is asked every question in `questions`, whole songs heard in `chunk_seconds` chunks.

    `model` is a spec for load_model (checkpoint, .pth, release alias) or a ready MusiLingo;
    `options` are any other AskConfig fields (encoder, llm, preset, max_new_tokens, output, ...).
    Returns one record per (file, question) in input order: id, audio, question, answer, error,
    seconds heard, model and settings. A broken file gives a record with `error` set, not a raise.
    """
    records: list[dict[str, Any]] = []
    ready = None if model is None or isinstance(model, (str, Path)) else model
    spec = None if ready is not None or model is None else str(model)
    inputs = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    asked = [questions] if isinstance(questions, str) else list(questions)
    config = AskConfig(inputs=inputs, questions=asked, model=spec, on_record=records.append, **options)
    run(config, model=ready)
    order = {item.id: i for i, item in enumerate(collect_items(config))}
    return sorted(records, key=lambda r: order.get(r["id"], len(order)))
