"""Reading the chat model's replies and the deterministic rules: `parse_pairs` (generation reply),
`parse_verdicts` (filter reply), and `rule_rejects`, the outlier rules (empty, duplicate question,
mentions the caption, answer length, off-caption) applied before the LLM filter."""

from __future__ import annotations

import re
from typing import Any

from musilingo_cli.pipelines.chat_api import UnparseableReply
from musilingo_cli.pipelines.make_mi.config import MakeMIConfig


def parse_pairs(data: Any) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Pairs from a generation reply, and items that were not pairs (kept as rejects).

    Accepts {"pairs": [...]}, a bare list, or any object with a single list of pairs.
    Raises UnparseableReply when there is no list at all.
    """
    items = data
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        items = data.get("pairs", lists[0] if len(lists) == 1 else None)
    if not isinstance(items, list):
        raise UnparseableReply('expected {"pairs": [...]}')
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
    items = data.get("verdicts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise UnparseableReply('expected {"verdicts": [...]}')
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
