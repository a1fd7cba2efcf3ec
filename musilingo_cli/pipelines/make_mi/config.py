"""make-mi's settings: `MakeMIConfig`, the two MI kinds (short, long) with their per-kind defaults
(pairs per caption, answer length bounds, output tokens per pair for the estimate), and the
checks `run` makes on a config before it reads anything."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from musilingo_cli.core.errors import ConfigError
from musilingo_cli.pipelines.chat_access import check_base_url

KINDS = ("short", "long")

# Per kind: pairs asked for (paper: ~5 short, ~6 long per caption), answer length bounds in
# words, and rough output tokens per pair for the dry-run estimate.
KIND_DEFAULTS = {
    "short": {"pairs": 5, "min_words": 1, "max_words": 60, "tokens_per_pair": 45},
    "long": {"pairs": 6, "min_words": 15, "max_words": 250, "tokens_per_pair": 130},
}


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
    max_retry_after: float = 300.0  # longest server-set wait (Retry-After) honoured, seconds; longer fails the unit
    max_output_tokens: int = 2048  # output budget sent as max_tokens; a cut reply is retried once with twice it
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


def check_config(config: MakeMIConfig) -> None:
    """Raises ConfigError naming the flag when a setting is out of range."""
    if not config.kinds or any(k not in KINDS for k in config.kinds):
        raise ConfigError(f"--kind must be short, long or both; got {config.kinds}")
    if config.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if config.limit is not None and config.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if config.max_retries < 0:
        raise ConfigError("--max-retries must be 0 or more")
    if not config.timeout > 0:
        raise ConfigError(f"--timeout must be more than 0 seconds, not {config.timeout:g}")
    if config.requests_per_minute is not None and config.requests_per_minute < 0:
        raise ConfigError(f"--requests-per-minute must be 0 (no limit) or more, not {config.requests_per_minute:g}")
    if config.max_retry_after < 0:
        raise ConfigError(f"--max-retry-after must be 0 or more seconds, not {config.max_retry_after:g}")
    if config.max_output_tokens < 1:
        raise ConfigError(f"--max-output-tokens must be at least 1, not {config.max_output_tokens}")
    check_base_url(config.base_url, "--base-url")
    if not config.base_url:
        check_base_url(os.environ.get("OPENAI_BASE_URL") or None, "$OPENAI_BASE_URL")
    for kind in config.kinds:
        lo, hi = config.words_for(kind)
        if lo > hi:
            raise ConfigError(f"answer word bounds for {kind} are {lo}-{hi}: the minimum exceeds the maximum")
