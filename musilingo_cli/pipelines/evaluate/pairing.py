"""Pairing answers with references, and the shuffled-reference floor.

Answers are paired with references by `id` when both sides carry ids, else by (audio file stem,
question), else by position when neither side has keys and the counts agree. The floor answers each
item with the reference of another item asked the same question (seeded).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from musilingo_cli.core.errors import DataError
from musilingo_cli.pipelines.evaluate.config import SHOWN, EvalItem
from musilingo_cli.pipelines.evaluate.readers import Prediction


def _audio_key(audio: str | None, question: str | None) -> tuple[str, str] | None:
    if audio is None or question is None:
        return None
    return Path(audio).stem, question.strip()


def _unique(keys: list, what: str) -> None:
    seen, dup = set(), []
    for key in keys:
        if key in seen:
            dup.append(key)
        seen.add(key)
    if dup:
        raise DataError(
            f"{len(dup)} duplicate {what}, e.g. {', '.join(map(str, dup[:SHOWN]))}; each item must appear once"
        )


def pair(
    predictions: list[Prediction], references: list[EvalItem] | None, source: str
) -> tuple[list[Prediction], list[EvalItem], int]:
    """Align answers with reference items; returns (answers, references, references left unanswered).

    A reference item without a question takes the answer's question (the floor groups by it).

    Raises DataError for duplicates, answers without a reference, and count mismatches.
    """
    if references is None:
        missing = [i for i, p in enumerate(predictions, 1) if p.reference is None]
        if missing:
            raise DataError(
                f"{source}: {len(missing)} answers carry no reference (e.g. record {missing[0]}); "
                "pass --references FILE or --split"
            )
        return predictions, [EvalItem(p.id, p.audio, p.question, p.reference) for p in predictions], 0
    if (
        all(p.id for p in predictions)
        and all(r.id for r in references)
        and {p.id for p in predictions} & {r.id for r in references}
    ):
        pred_keys, ref_keys, what = [p.id for p in predictions], [r.id for r in references], "ids"
    else:
        pred_keys = [_audio_key(p.audio, p.question) for p in predictions]
        ref_keys = [_audio_key(r.audio, r.question) for r in references]
        what = "(audio, question) pairs"
        if None in pred_keys or None in ref_keys:
            if any(k is not None for k in pred_keys + ref_keys) or len(predictions) != len(references):
                raise DataError(
                    f"{source}: cannot pair {len(predictions)} answers with {len(references)} references: "
                    "give both sides an `id`, or `audio` and `question`, or equal counts in the same order"
                )
            return predictions, _with_questions(predictions, references), 0
    _unique(pred_keys, f"{what} in {source}")
    _unique(ref_keys, f"{what} in the references")
    by_key = dict(zip(ref_keys, references))
    missing = [k for k in pred_keys if k not in by_key]
    if missing:
        raise DataError(
            f"{source}: {len(missing)} answers have no reference, e.g. {', '.join(map(str, missing[:SHOWN]))}"
        )
    return predictions, _with_questions(predictions, [by_key[k] for k in pred_keys]), len(references) - len(pred_keys)


def _with_questions(predictions: list[Prediction], references: list[EvalItem]) -> list[EvalItem]:
    return [
        r if r.question is not None else EvalItem(r.id, r.audio, p.question, r.reference)
        for p, r in zip(predictions, references)
    ]


# ---------------------------------------------------------------- floor


def floor_references(questions: list[str], references: list[str], seed: int) -> tuple[list[str], int]:
    """For each item, the reference of another item asked the same question (seeded).

    Within a question group the items are shuffled and each takes the next one's reference (a
    random cycle, so never its own). Items whose question is unique take a random other item's
    reference; their count is returned and shown, because that part of the floor is weaker.
    Items without a question (e.g. caption files) all share the empty question: one instruction.
    """
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, question in enumerate(questions):
        groups[question.strip()].append(index)
    answers = list(references)
    fallback = 0
    for members in groups.values():
        if len(members) > 1:
            order = members[:]
            rng.shuffle(order)
            for here, there in zip(order, order[1:] + order[:1]):
                answers[here] = references[there]
    for members in groups.values():
        if len(members) == 1 and len(references) > 1:
            here = members[0]
            there = rng.randrange(len(references) - 1)
            answers[here] = references[there + (there >= here)]
            fallback += 1
    return answers, fallback
