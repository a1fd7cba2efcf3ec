"""`musilingo ask`: answer questions about audio files (one song, many files, folders, manifests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from musilingo_cli.commands import options
from musilingo_cli.commands.options import output_format
from musilingo_cli.core.console import echo
from musilingo_cli.core.errors import ConfigError


def command(
    args: Optional[list[str]] = typer.Argument(
        None,
        metavar="AUDIO... [QUESTION]",
        help="Audio files, directories (searched recursively for audio) and globs; the last one is the question "
        "unless -q or --caption is given.",
    ),
    question: Optional[list[str]] = typer.Option(
        None, "-q", "--question", help="A question to ask about every file (repeatable)."
    ),
    caption: bool = typer.Option(
        False,
        "--caption",
        help="Ask for a caption with the paper's instruction ('Please give a caption to the music.').",
    ),
    manifest: Optional[Path] = typer.Option(
        None,
        "--manifest",
        help="CSV/TSV/JSONL with a `path` column and optional `question` and `id` (relative paths: from the "
        "manifest's folder).",
    ),
    model: Optional[str] = options.MODEL,
    encoder: Optional[str] = typer.Option(
        None,
        "--encoder",
        help="Audio encoder override: hub id or local directory (MERT), or a named encoder (musicnn-msd, musicnn-mtt).",
    ),
    llm: Optional[str] = typer.Option(
        None,
        "--llm",
        help="LLM override: hub id or local directory. --encoder + --llm without --model = untrained adapter (smoke "
        "tests).",
    ),
    output: Optional[Path] = typer.Option(
        None,
        "-o",
        "--output",
        help="JSONL file: one record per (file, question), written as each is done; rerunning resumes it. Under "
        "torchrun each rank writes FILE.part-RANK-of-WORLD, merged into FILE at the end.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print each record as one JSON line on stdout (same as --format json)."
    ),
    fmt: str = typer.Option(
        "text", "--format", help="text (the answer, or audio<TAB>question<TAB>answer lines) or json (as --json)."
    ),
    preset: str = typer.Option(
        "official", "--preset", help="official (sampling, T=0.1, top_p=0.5, as the paper) or greedy (deterministic)."
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Most tokens per answer (default: 300, as the paper)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds sampling (recorded with each answer)."),
    device: Optional[str] = options.DEVICE,
    dtype: Optional[str] = options.DTYPE,
    encoder_dtype: Optional[str] = options.ENCODER_DTYPE,
    batch_size: Optional[int] = typer.Option(
        None,
        "--batch-size",
        help="Items answered at once (default: 128 on cuda, 8 on cpu; 256 is faster on an 80+ GB GPU for short "
        "answers).",
    ),
    encoder_batch_size: Optional[int] = typer.Option(
        None, "--encoder-batch-size", help="Equal-length audio chunks encoded at once (default: 16 on cuda, 8 on cpu)."
    ),
    chunk_seconds: float = typer.Option(
        30.0, "--chunk-seconds", help="Long audio is encoded in chunks of this length and their tokens joined."
    ),
    max_seconds: Optional[float] = typer.Option(
        None, "--max-seconds", help="Use at most the first N seconds of each file."
    ),
    compile_: Optional[bool] = typer.Option(
        None,
        "--compile/--no-compile",
        help="Compile the decoding step with torch.compile (default: on for cuda; each new batch size waits for the "
        "compile). On cuda the step is a CUDA graph either way.",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Threads decoding audio ahead of the model (default: one per core, at most 8)."
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="On a rerun, answer again the items whose record is an error."
    ),
    quantize: Optional[str] = typer.Option(
        None,
        "--quantize",
        help="Load the LLM in 8bit or 4bit (NF4) through bitsandbytes: less GPU memory; the encoder keeps its dtype.",
    ),
    json_schema: Optional[str] = typer.Option(
        None,
        "--json-schema",
        help="Answers follow this JSON Schema file (constrained decoding; records carry the parsed object), or "
        "'catalogue': genre, mood, instruments, tempo, key, vocals, caption (asks its own question unless you give "
        "one).",
    ),
) -> None:
    """Answer questions about music: `musilingo ask song.wav "What genre?"`, or many files, folders, manifests."""
    as_json = output_format(fmt, ("text", "json"), as_json) == "json"
    # imported here, not at the top: keeps `musilingo --help` and option errors fast (torch)
    from musilingo_cli.core.console import results_only_on_stdout
    from musilingo_cli.data.inputs import check_readable
    from musilingo_cli.model.hub import go_offline_if_unreachable
    from musilingo_cli.pipelines.ask import AskConfig, own_items, run

    if json_schema and not (question or caption or manifest) and args and Path(args[-1]).exists():
        from musilingo_cli.model.structured import BUILTIN, builtin_prompt  # lazy: as the pipeline import above

        question = [builtin_prompt(json_schema)] if json_schema in BUILTIN else question
    inputs, questions = split_question(list(args or []), list(question or []), caption, manifest)
    single = manifest is None and len(inputs) == 1 and Path(inputs[0]).is_file() and len(questions) + caption == 1
    config = AskConfig(
        inputs=inputs,
        questions=questions,
        caption=caption,
        manifest=manifest,
        model=model,
        encoder=encoder,
        llm=llm,
        output=output,
        device=device,
        dtype=dtype,
        encoder_dtype=encoder_dtype,
        batch_size=batch_size,
        encoder_batch_size=encoder_batch_size,
        preset=preset,
        max_new_tokens=max_new_tokens,
        seed=seed,
        chunk_seconds=chunk_seconds,
        max_seconds=max_seconds,
        compile=compile_,
        workers=workers,
        retry_errors=retry_errors,
        json_schema=json_schema,
        quantize=quantize,
        launcher=True,
    )
    in_order = InputOrder(_printer(as_json, single, quiet=output is not None))
    config.on_record = in_order
    items = own_items(config)  # under torchrun: this rank's share
    in_order.expect([item.id for item in items])
    if len(items) == 1 and output is None:  # one file, nothing to resume: a bad file is one line, no record
        check_readable(items[0])
    # only what names a model can need the hub (nothing named: load_model says what to pass)
    go_offline_if_unreachable([s for s in (model, encoder, llm) if s])
    with results_only_on_stdout():
        try:
            summary = run(config)
        finally:
            in_order.flush()
    _print_summary(summary, single or (len(items) == 1 and output is None))
    if summary["failed"] or summary["failed_before"]:
        raise typer.Exit(1)


def split_question(
    args: list[str], questions: list[str], caption: bool, manifest: Path | None
) -> tuple[list[str], list[str]]:
    """(inputs, questions): without -q/--caption the last positional argument is the question."""
    if questions or caption or not args:
        return args, questions
    if len(args) == 1 and manifest is None:
        raise ConfigError(
            f'no question: add it after the audio (musilingo ask {args[0]} "What genre?"), '
            "or pass -q QUESTION or --caption"
        )
    last = args[-1]
    if Path(last).exists():
        raise ConfigError(
            f"the last argument {last!r} is a file, not a question: end with the question, "
            "or pass -q QUESTION or --caption"
        )
    return args[:-1], [last]


class InputOrder:
    """Passes records on in input order: `ask` answers in length order (faster batches), but
    users read and diff its output against their list. A record waits until every earlier one
    is shown; items that never come (already done in -o on a rerun) are passed over at flush()."""

    def __init__(self, show):
        self.show, self.rank, self.held, self.next = show, {}, {}, 0

    def expect(self, ids: list[str]) -> None:
        self.rank = {ident: i for i, ident in enumerate(ids)}

    def __call__(self, record: dict) -> None:
        rank = self.rank.get(record.get("id"))
        if rank is None:
            self.show(record)
            return
        self.held[rank] = record
        while self.next in self.held:
            self.show(self.held.pop(self.next))
            self.next += 1

    def flush(self) -> None:
        for rank in sorted(self.held):
            self.show(self.held.pop(rank))


def _printer(as_json: bool, single: bool, quiet: bool):
    """How records reach stdout: JSON lines, the bare answer (one item), or TSV lines
    (audio, question, answer); nothing with -o unless --json. Errors are on stderr already."""

    def show(record: dict) -> None:
        if as_json:
            echo(json.dumps(record, ensure_ascii=False))
        elif quiet or record["error"]:
            return
        elif single:
            echo(record["answer"])
        else:
            answer = " ".join(record["answer"].split())  # one line per record, greppable
            echo(f"{record['audio']}\t{record['question']}\t{answer}")

    return show


def _print_summary(s: dict, single: bool) -> None:
    from musilingo_cli.core.console import stderr, warn

    if single and not s["output"]:  # the answer, or the file's one error line, is all there is to say
        return
    parts = [f"answered {s['answered']}", f"failed {s['failed']}"]
    if s["skipped_done"]:
        parts.append(f"skipped {s['skipped_done']} already in {s['output']}")
    who = f"musilingo ask (rank {s['rank']} of {s['world']})" if s.get("world", 1) > 1 else "musilingo ask"
    stderr.print(
        f"{who}: {', '.join(parts)}" + (f" ({s['seconds']:.1f} s)" if s.get("seconds") else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if s.get("merged") is not None:
        stderr.print(
            f"merged the part files: {s['merged']} records in {s['output']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    elif s["output"] and s.get("rank", 0) == 0:
        stderr.print(f"records in {s['output']}", markup=False, highlight=False, soft_wrap=True)
    if s["output"] and (s["failed"] or s["failed_before"]):
        warn(
            f"{s['failed'] + s['failed_before']} item(s) failed (error records); fix the files and rerun with "
            "--retry-errors to answer them again"
        )
    elif s["failed"]:
        warn(f"{s['failed']} item(s) failed (said above); fix the files and run them again")
