"""Optional answer extraction by an LLM judge for the multiple-choice splits (`--judge-model`,
`--judge-base-url`; key from OPENAI_API_KEY), through the same OpenAI-compatible client as make-mi
(pipelines/chat_api.py). The judge only says which option an output names; accuracy is then counted
against the item's right option. It is reported beside the official rule's number, never instead of it,
with the judge's model and this pinned prompt.
"""

from __future__ import annotations

import os
import string
from typing import Any

from musilingo_cli.pipelines.chat_access import api_key_source, preflight, read_api_key
from musilingo_cli.pipelines.chat_api import ChatClient, ChatSettings, RetriesExhausted
from musilingo_cli.pipelines.chat_parsing import UnparseableReply
from musilingo_cli.pipelines.evaluate.choice_rules import ChoiceItem

JUDGE_SYSTEM = (
    "You read a model's answer to a multiple-choice question and say which option it chose. "
    'Reply with JSON only: {"choice": "<letter>"} with the letter of the option the answer chooses, '
    'or {"choice": null} if it chooses none or several.'
)


def judge_messages(item: ChoiceItem, output: str) -> list[dict[str, str]]:
    """The pinned judge prompt for one item: system rule, then question, lettered options, answer."""
    letters = string.ascii_uppercase
    options = "\n".join(f"({letters[k]}) {text}" for k, text in enumerate(item.options))
    user = f"<question>\n{item.question}\n</question>\n<options>\n{options}\n</options>\n<answer>\n{output}\n</answer>"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def _validator(count: int):
    allowed = set(string.ascii_uppercase[:count])

    def validate(data: Any) -> None:
        if not isinstance(data, dict) or "choice" not in data:
            raise UnparseableReply('expected {"choice": letter or null}')
        choice = data["choice"]
        if choice is not None and (not isinstance(choice, str) or choice.strip().upper() not in allowed):
            raise UnparseableReply(f"choice must be one of {''.join(sorted(allowed))} or null")

    return validate


def judge_settings(model: str, base_url: str | None, **overrides: Any) -> ChatSettings:
    """The judges' client settings (this MC judge and judge_score's): `--judge-base-url`, else
    $OPENAI_BASE_URL, else OpenAI; the key from the environment only; greedy, seeded, short replies."""
    key = read_api_key(None)
    return ChatSettings(
        model=model,
        base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
        api_key=key,
        key_source=api_key_source(None, key),
        temperature=0.0,
        seed=0,
        max_tokens=64,
        **overrides,
    )


def check_judge(model: str, base_url: str | None) -> None:
    """Raise ChatAPIError (one line, nothing sent) when the judge's server cannot be reached or the
    default OpenAI API has no key: said before any scoring, not as every item failing."""
    settings = judge_settings(model, base_url)
    preflight(settings.base_url, settings.api_key, timeout=10.0)


def judge_choices(
    items: list[ChoiceItem], outputs: list[str | None], model: str, base_url: str | None
) -> dict[str, Any]:
    """Ask the judge which option each output names; items without output, a null choice or a failed
    request count as unanswered (never guessed).

    Returns {"model", "prompt", "accuracy", "unanswered", "failed", "n"} (accuracy a fraction of all
    items). Raises ChatAPIError for faults a retry cannot fix (bad key, model or URL)."""
    settings = judge_settings(model, base_url)
    correct = unanswered = failed = 0
    with ChatClient(settings, rng_seed=0) as client:
        for item, output in zip(items, outputs):
            if output is None or not output.strip():
                unanswered += 1
                continue
            try:
                reply = client.chat_json(judge_messages(item, output), validate=_validator(len(item.options)))
            except RetriesExhausted:
                failed += 1
                unanswered += 1
                continue
            choice = reply.data["choice"]
            if choice is None:
                unanswered += 1
            elif string.ascii_uppercase.index(choice.strip().upper()) == item.correct:
                correct += 1
    n = len(items)
    return {
        "model": model,
        "prompt": JUDGE_SYSTEM,
        "accuracy": correct / n if n else None,
        "unanswered": unanswered,
        "failed": failed,
        "n": n,
    }
