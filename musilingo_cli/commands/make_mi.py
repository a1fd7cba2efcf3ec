"""`musilingo make-mi`: Music Instruct Q&A pairs from captions via any OpenAI-compatible chat API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from musilingo_cli.commands.options import output_format
from musilingo_cli.core.console import echo
from musilingo_cli.core.errors import ConfigError, MusilingoError, require_extra


def command(
    captions: Path = typer.Option(..., "--captions", help="Caption file: MusicCaps CSV, another CSV/TSV, or JSONL."),
    out: Path = typer.Option(
        Path("mi"), "-o", "--output", "--out", help="Output folder (journal, MI JSON files, rejects, summary)."
    ),
    kind: str = typer.Option("both", "--kind", help="short (MI v1), long (MI v2) or both."),
    model: str = typer.Option("gpt-4o-mini", "--model", help="Chat model name on the server."),
    base_url: Optional[str] = typer.Option(
        None,
        "--base-url",
        help="OpenAI-compatible API URL (vLLM, llama.cpp, Ollama: http://host:port/v1); default $OPENAI_BASE_URL or "
        "OpenAI. Key: $OPENAI_API_KEY.",
    ),
    api_key_file: Optional[Path] = typer.Option(
        None, "--api-key-file", help="Read the API key from this file (first line) instead of $OPENAI_API_KEY."
    ),
    id_column: str = typer.Option("ytid", "--id-column", help="Column (or JSONL key) with the clip id."),
    caption_column: str = typer.Option("caption", "--caption-column", help="Column (or JSONL key) with the caption."),
    split_column: str = typer.Option(
        "is_audioset_eval",
        "--split-column",
        help="Column saying test (True/test) or train (False/train); '' = all train.",
    ),
    prompt_short: str = typer.Option(
        "short", "--prompt-short", help="Generation prompt for short pairs: a name in prompts/ or a .txt path."
    ),
    prompt_long: str = typer.Option(
        "long", "--prompt-long", help="Generation prompt for long pairs: a name or a .txt path."
    ),
    filter_prompt: str = typer.Option("filter", "--filter-prompt", help="Filter prompt: a name or a .txt path."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight at once."),
    requests_per_minute: float = typer.Option(
        500, "--requests-per-minute", help="Rate limit shared by all workers (0 = none)."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N captions."),
    seed: Optional[int] = typer.Option(0, "--seed", help="Sent to the API as `seed`; also seeds retry jitter."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature for both prompts."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for one reply before retrying."),
    max_retries: int = typer.Option(
        6,
        "--max-retries",
        help="Retries per request (429, 5xx, timeouts, unparseable replies) before the caption is recorded as failed.",
    ),
    retry_base: float = typer.Option(
        1.0,
        "--retry-base",
        help="Jitter base in seconds for content retries (delay ~ U(0, base*2^k)); transport retries are the openai "
        "client's own.",
    ),
    max_retry_after: float = typer.Option(
        300.0,
        "--max-retry-after",
        help="Longest wait in seconds a server may ask for (Retry-After) that is honoured; a longer one fails the "
        "caption, naming the wait.",
    ),
    max_output_tokens: int = typer.Option(
        2048,
        "--max-output-tokens",
        help="Output budget per reply, sent as max_tokens; a reply cut at it is retried once with twice the budget.",
    ),
    retry_failed: bool = typer.Option(
        True, "--retry-failed/--no-retry-failed", help="On a rerun, request captions that failed before again."
    ),
    pairs_short: int = typer.Option(5, "--pairs-short", help="Pairs asked for per caption, short kind."),
    pairs_long: int = typer.Option(6, "--pairs-long", help="Pairs asked for per caption, long kind."),
    short_words: str = typer.Option(
        "1-60", "--short-answer-words", help="Kept short answers' length in words, MIN-MAX."
    ),
    long_words: str = typer.Option(
        "15-250", "--long-answer-words", help="Kept long answers' length in words, MIN-MAX."
    ),
    min_overlap: float = typer.Option(
        0.2, "--min-overlap", help="Off-caption rule: least share of an answer's content words found in the caption."
    ),
    price_input: Optional[float] = typer.Option(
        None, "--price-input", help="USD per 1M input tokens (default: a table of known models)."
    ),
    price_output: Optional[float] = typer.Option(None, "--price-output", help="USD per 1M output tokens."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show the prompts and the estimated tokens and cost; send nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (same as --format json)."),
    fmt: str = typer.Option("text", "--format", help="text or json (as --json)."),
) -> None:
    """Build Music Instruct (MI) Q&A pairs from captions with a chat model, filter them, write MI JSON."""
    as_json = output_format(fmt, ("text", "json"), as_json) == "json"
    if not dry_run:
        require_extra("make-mi", "openai", what="musilingo make-mi")
    # imported here, not at the top: keeps `musilingo --help` and option errors fast (torch)
    from musilingo_cli.core.console import results_only_on_stdout
    from musilingo_cli.pipelines.make_mi import MakeMIConfig, run

    kinds = {"short": ("short",), "long": ("long",), "both": ("short", "long")}.get(kind)
    if kinds is None:
        raise ConfigError(f"--kind must be short, long or both, not '{kind}'")
    config = MakeMIConfig(
        captions=captions,
        out=out,
        kinds=kinds,
        model=model,
        base_url=base_url,
        api_key_file=api_key_file,
        id_column=id_column,
        caption_column=caption_column,
        split_column=split_column or None,
        prompt_short=prompt_short,
        prompt_long=prompt_long,
        filter_prompt=filter_prompt,
        concurrency=concurrency,
        requests_per_minute=requests_per_minute or None,
        limit=limit,
        seed=seed,
        temperature=temperature,
        timeout=timeout,
        max_retries=max_retries,
        retry_base=retry_base,
        max_retry_after=max_retry_after,
        max_output_tokens=max_output_tokens,
        retry_failed=retry_failed,
        dry_run=dry_run,
        price_input=price_input,
        price_output=price_output,
        pairs={"short": pairs_short, "long": pairs_long},
        answer_words={
            "short": _bounds("--short-answer-words", short_words),
            "long": _bounds("--long-answer-words", long_words),
        },
        min_overlap=min_overlap,
    )
    with results_only_on_stdout():
        summary = run(config)
    if as_json:
        echo(json.dumps(summary, ensure_ascii=False, indent=1))
    elif dry_run:
        _print_dry_run(summary)
    else:
        _print_summary(summary)
    if not dry_run and summary["units_failed"] and not summary["units_done"]:
        raise MusilingoError(
            f"every caption failed ({summary['units_failed']} caption x kind): nothing usable was made; "
            f"see {out / 'summary.json'} for why, fix it and rerun the same command"
        )


def _bounds(flag: str, text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise ConfigError(f"{flag} must look like MIN-MAX (e.g. 1-60), not '{text}'") from None
    return lo, hi


def _cost(value) -> str:
    return "unknown (pass --price-input/--price-output)" if value is None else f"${value:,.4f}"


def _print_dry_run(s: dict) -> None:
    from musilingo_cli.core.console import stdout

    for name, messages in s["example_messages"].items():
        stdout.rule(f"{name} prompt (first caption)")
        for m in messages:
            stdout.print(f"[bold]{m['role']}:[/bold]")
            stdout.print(m["content"], markup=False)
    stdout.rule("estimate (nothing was sent)")
    t = s["estimated_tokens"]
    stdout.print(
        f"captions {s['captions']} (skipped empty: {s['captions_skipped_empty']}), kinds {', '.join(s['kinds'])}, "
        f"about {s['requests']} requests"
    )
    stdout.print(
        f"tokens ~{t['prompt_tokens']:,} in + ~{t['completion_tokens']:,} out (chars/4 heuristic); cost "
        f"{_cost(s['estimated_cost_usd'])} with {s['model']}"
    )


def _print_summary(s: dict) -> None:
    from musilingo_cli.core.console import stdout, warn

    kept = ", ".join(f"{k} {v}" for k, v in s["pairs_kept"].items())
    reasons = ", ".join(f"{k} {v}" for k, v in s["rejected_by_reason"].items()) or "none"
    stdout.print(f"pairs generated {s['pairs_generated']}, kept {kept}; rejected {s['pairs_rejected']} ({reasons})")
    stdout.print(
        f"captions done {s['units_done']} (caption x kind), failed {s['units_failed']}, skipped empty "
        f"{s['captions_skipped_empty']}"
    )
    t = s["tokens"]
    stdout.print(
        f"tokens {t['prompt_tokens']:,} in + {t['completion_tokens']:,} out; estimated cost "
        f"{_cost(s['estimated_cost_usd'])}"
    )
    if s.get("requests_without_usage"):
        warn(
            f"{s['requests_without_usage']} request(s) got no reply or no token count (an interrupted run); the server "
            f"may have billed them, so the cost is a lower bound"
        )
    for f in s["files"]:
        stdout.print(f"wrote {f}")
    if s["units_failed"]:
        warn(
            f"{s['units_failed']} caption(s) failed after retries (see summary.json); rerun the same command to retry "
            f"them"
        )
