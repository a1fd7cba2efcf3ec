"""Does a prompt fit the LLM? Audio tokens + the prompt's text + room for the answer must stay within
the positions the LLM was trained on (Vicuna-7B: 2,048). Checked before anything is allocated for
it, so a 3-hour file or a 400 kB question becomes one error line instead of a wrong answer from
positions the model never saw, or an attempt to allocate tens of GB.

Used by `ask` for every item; chat and serve can call `check_prompt` the same way.
"""

from __future__ import annotations

import math

from musilingo_cli.core.errors import MusilingoError

# config fields that hold the trained context, in the order transformers' model families use them
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


class PromptTooLong(MusilingoError):
    """A prompt (audio + text + room for the answer) longer than the LLM's context."""


def context_length(llm) -> int | None:
    """Positions the LLM was trained on (its config's `max_position_embeddings` or the family's
    equivalent), or None when the config does not say."""
    config = getattr(llm, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in _CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def text_positions(model, question: str | None) -> int:
    """Prompt positions that are not audio: BOS + the template around the audio + the question
    (tokenized as `MusiLingo.token_row` does it)."""
    return len(model.token_row(0, question, None)[0])


def check_prompt(
    limit: int | None, audio_tokens: int, text_tokens: int, max_new_tokens: int, audio_seconds: float | None = None
) -> None:
    """Raise PromptTooLong (one line naming the limit, and the `--max-seconds` that would fit) when
    `audio_tokens + text_tokens + max_new_tokens` exceeds `limit` (None: no known limit).

    `audio_seconds` (the audio those tokens stand for) turns the room left into seconds.
    """
    total = audio_tokens + text_tokens + max_new_tokens
    if limit is None or total <= limit:
        return
    room = limit - text_tokens - max_new_tokens
    parts = f"{audio_tokens} audio + {text_tokens} text tokens + {max_new_tokens} for --max-new-tokens"
    if room < 1:
        fix = "shorten the question or lower --max-new-tokens"
    elif audio_seconds and audio_tokens:
        # one token less: chunks round their last token up, so a cut can give one more than linear
        seconds = math.floor(max(1, room - 1) * audio_seconds / audio_tokens)
        fix = f"pass --max-seconds {seconds} or less (about {room} audio tokens fit), or lower --max-new-tokens"
    else:
        fix = f"pass a smaller --max-seconds (about {room} audio tokens fit), or lower --max-new-tokens"
    raise PromptTooLong(f"prompt too long for the LLM: {parts} = {total} positions, over its context of {limit}; {fix}")
