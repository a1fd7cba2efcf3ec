"""An optional LLM judge score (0-5) for captions and open answers (`--judge-model`, `--judge-base-url`;
the key from OPENAI_API_KEY only), through the same OpenAI-compatible client as make-mi and the
multiple-choice judge (pipelines/chat_api.py).

Several recent papers report such a judge score beside the n-gram metrics; their prompts differ, so
numbers from different prompts are not comparable. Ours is pinned: prompts/eval_judge_score_v1.txt
(installed as musilingo_cli.prompts), named, versioned and hashed in the report. The score is reported
beside the official metrics, never instead of them, labelled as a judge score: its mean over the items
the judge scored and its distribution over 0..5.

Empty answers (and answers that failed in ask) get 0 without a request: the prompt's rubric defines
0 as "no answer". A reply that is not {"score": integer 0-5} is retried by the client (another seed,
a note saying why); if it still does not parse, the item is counted as `unparseable` and left out of
the mean, never guessed. Requests that fail for good (RetriesExhausted) are counted as `failed`.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from musilingo_cli.pipelines.chat_api import ChatClient, RetriesExhausted
from musilingo_cli.pipelines.chat_parsing import UnparseableReply
from musilingo_cli.pipelines.evaluate.judge import judge_settings
from musilingo_cli.pipelines.make_mi.prompts import Prompt, load_prompt

PROMPT_NAME = "eval_judge_score_v1"  # prompts/<name>.txt; a new rubric is a new version, never an edit
LABEL = "LLM judge score (0-5), not an official metric"
SCORES = tuple(range(6))
THREADS = 4  # requests in flight at once (ChatClient is thread-safe)
RETRIES = 2  # content retries of an unparseable reply before it is counted as such
RETRY_BASE = 1.0  # seconds: the ceiling of the first backoff (ChatSettings.retry_base)


def score_prompt() -> Prompt:
    """The pinned prompt (name PROMPT_NAME, sha256 of the file's text)."""
    path = resources.files("musilingo_cli.prompts") / f"{PROMPT_NAME}.txt"
    return dataclasses.replace(load_prompt(str(path)), name=PROMPT_NAME)


def score_messages(prompt: Prompt, question: str | None, references: list[str], answer: str) -> list[dict[str, str]]:
    """The judge's messages for one answer: the pinned rubric, then question, numbered references, answer."""
    listed = "\n".join(f"{k}. {text}" for k, text in enumerate(references, start=1))
    return prompt.messages(question=question or "Describe the music.", references=listed, answer=answer)


def validate_score(data: Any) -> None:
    """Raise UnparseableReply unless `data` is {"score": an integer 0..5} (5.0 counts as 5; True does not)."""
    if not isinstance(data, dict) or "score" not in data:
        raise UnparseableReply('expected {"score": an integer from 0 to 5}')
    value = data["score"]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
        or int(value) not in SCORES
    ):
        raise UnparseableReply(f"score must be an integer from 0 to 5, got {value!r}")


def judge_scores(
    questions: list[str | None],
    references: list[list[str]],
    answers: list[str],
    model: str,
    base_url: str | None,
) -> tuple[dict[str, Any], list[int | None]]:
    """Score each answer 0-5 against its references with the pinned prompt.

    questions, references (each item's non-empty list), answers: aligned, one per item.
    Returns (summary, per-item scores: int 0..5, or None when unparseable or failed). The summary holds
    label, model, prompt (name), prompt_sha256, mean (over scored items; None if none), distribution
    ({"0": count, ..., "5": count}), n, scored, empty, unparseable, failed.
    Raises ChatAPIError for faults a retry cannot fix (bad key, model or URL).
    """
    prompt = score_prompt()
    settings = judge_settings(model, base_url, max_retries=RETRIES, retry_base=RETRY_BASE)

    def one(index: int) -> tuple[int | None, str]:
        """(score, outcome): outcome "scored", "empty", "unparseable" or "failed"."""
        answer = answers[index]
        if not answer.strip():
            return 0, "empty"  # the rubric's "no answer"
        messages = score_messages(prompt, questions[index], references[index], answer)
        try:
            reply = client.chat_json(messages, validate=validate_score)
        except RetriesExhausted as err:
            return None, "unparseable" if err.reason == "unparseable" else "failed"
        return int(reply.data["score"]), "scored"

    with ChatClient(settings, rng_seed=0) as client:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            results = list(pool.map(one, range(len(answers))))
    scores = [score for score, _ in results]
    outcomes = [outcome for _, outcome in results]
    scored = [s for s in scores if s is not None]
    summary = {
        "label": LABEL,
        "model": model,
        "prompt": prompt.name,
        "prompt_sha256": prompt.sha256,
        "mean": math.fsum(scored) / len(scored) if scored else None,
        "distribution": {str(k): scored.count(k) for k in SCORES},
        "n": len(answers),
        "scored": len(scored),
        **{name: outcomes.count(name) for name in ("empty", "unparseable", "failed")},
    }
    return summary, scores
