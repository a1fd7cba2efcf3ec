"""make-mi's cost: a price table (USD per 1M tokens), the cost of tokens used, and the dry run,
which shows the prompts for the first caption and estimates tokens and cost without sending."""

from __future__ import annotations

from typing import Any

from musilingo_cli.pipelines.make_mi.config import KIND_DEFAULTS, MakeMIConfig

# USD per 1M tokens (input, output), as of 2026 -- edit if needed, or pass --price-input/--price-output.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}

# Rough output tokens per filter verdict, for the dry-run estimate (per-kind ones are in config.KIND_DEFAULTS).
FILTER_TOKENS_PER_PAIR = 25


def prices_for(config: MakeMIConfig) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: the flags, else the table (longest matching name), else None."""
    known = next((PRICES[m] for m in sorted(PRICES, key=len, reverse=True) if config.model.startswith(m)), None)
    if config.price_input is None and config.price_output is None:
        return known
    base = known or (0.0, 0.0)
    return (
        config.price_input if config.price_input is not None else base[0],
        config.price_output if config.price_output is not None else base[1],
    )


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
        example["filter"] = filter_prompt.messages(
            caption=first.text, pairs='[{"index": 1, "question": "...", "answer": "..."}]', n=1
        )
    return {
        "dry_run": True,
        "captions": len(captions),
        "captions_skipped_empty": skipped_empty,
        "kinds": list(config.kinds),
        "requests": 2 * len(captions) * len(config.kinds),
        "estimated_tokens": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "estimated_cost_usd": estimate_cost(config, prompt_tokens, completion_tokens),
        "model": config.model,
        "prompts": {
            kind: {"name": p.name, "sha256": p.sha256} for kind, p in {**prompts, "filter": filter_prompt}.items()
        },
        "example_messages": example,
    }
