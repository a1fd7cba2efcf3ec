"""The official answer rules of the multiple-choice music benchmarks, reproduced exactly, and the
exact (not sampled) random-choice and always-first-choice baselines under each rule.

- MuChoMusic (`muchomusic_eval/scoring.py::extract_responses`, mulab-mir/muchomusic): keep the text
  after the last "The correct answer is:"; if exactly one of the *characters* A, B, C, D occurs in it
  (the code intersects the set of letters with the string, so the capital B of "Blues" counts), that
  letter is the answer; else the first option (in the order shown) whose lower-cased, stripped text
  is a substring of the lower-cased output; else unanswered (-1). Correct when the chosen position
  is where the original option 0 (the right answer) was shuffled to: `answer_orders.index(0)`.
- MMAU (`evaluation.py::string_match`, Sakshi113/MMAU) and MMAR (`code/evaluation.py`, the same
  function, ddlBoJack/MMAR): tokens are `re.findall(r"\\b\\w+\\b", text.lower())` as sets; correct when
  every answer token is in the prediction and the prediction shares no token with the wrong choices'
  tokens that the answer lacks (a wrong choice with the answer's exact token set is ignored); an empty
  prediction is wrong.

"Unanswered" is the rule's own notion for MuChoMusic (-1). For MMAU/MMAR, whose rule only says right
or wrong, an output is unanswered when `string_match` accepts it for no choice at all (it names no
option), so a wrong answer and a non-answer are told apart without guessing either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MUCHOMUSIC_PREFIX = "The correct answer is:"
MUCHOMUSIC_LETTERS = ("A", "B", "C", "D")
UNANSWERED = -1

RULE_NAMES = {
    "muchomusic": "MuChoMusic scoring.py extract_responses (text after 'The correct answer is:'; "
    "one of the letters A-D, else option text, else unanswered)",
    "mmau": "MMAU evaluation.py string_match (all answer tokens present, no token of a wrong choice)",
    "mmar": "MMAR code/evaluation.py string_match (= MMAU's: all answer tokens, no wrong-choice token)",
}


# ---------------------------------------------------------------- MuChoMusic


def muchomusic_choice(output: str, options: list[str], prefix: str = MUCHOMUSIC_PREFIX) -> int:
    """The option position (0-based, in the order shown) MuChoMusic's `extract_responses` reads from
    `output`, or -1 (unanswered). Reproduces muchomusic_eval/scoring.py line for line, including
    that letters are matched as single characters anywhere in the text."""
    text = output.split(prefix)[-1].strip()
    letters = set(MUCHOMUSIC_LETTERS).intersection(text)
    if len(letters) == 1:
        return MUCHOMUSIC_LETTERS.index(letters.pop())
    lowered = text.lower().strip()
    for position, option in enumerate(options):
        if option.lower().strip() in lowered:
            return position
    return UNANSWERED


# ---------------------------------------------------------------- MMAU / MMAR


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\b\w+\b", text.lower()))


def string_match(answer: str, prediction: str, choices: list[str]) -> bool:
    """MMAU's `string_match` (also MMAR's): True when the prediction holds every answer token and
    none of the wrong choices' tokens that the answer lacks. Empty predictions are False."""
    prediction_tokens = _tokens(prediction)
    answer_tokens = _tokens(answer)
    if not prediction_tokens:
        return False
    incorrect: set[str] = set()
    for choice in choices:
        choice_tokens = _tokens(choice)
        if choice_tokens != answer_tokens:
            incorrect.update(choice_tokens - answer_tokens)
    return answer_tokens.issubset(prediction_tokens) and prediction_tokens.isdisjoint(incorrect)


def string_match_choice(prediction: str, choices: list[str]) -> int:
    """The first choice `string_match` accepts `prediction` for, or -1 when it names none."""
    for position, choice in enumerate(choices):
        if string_match(choice, prediction, choices):
            return position
    return UNANSWERED


# ---------------------------------------------------------------- one item under its rule


@dataclass
class ChoiceItem:
    """One multiple-choice question as the benchmark file gives it.

    options: the choices in the order shown to the model; correct: the right option's position
    (MuChoMusic: `answer_orders.index(0)`; MMAU/MMAR: the position of `answer` in `choices`, -1 when
    the answer text is not one of them); answer: the answer text (MMAU/MMAR rule input);
    groups: breakdown name -> the values this item counts under (e.g. {"genre": ["Rock"]}).
    """

    id: str
    benchmark: str  # "muchomusic", "mmau" or "mmar"
    question: str
    options: list[str]
    correct: int
    answer: str
    audio: str | None
    prompt: str | None
    groups: dict[str, list[str]]


@dataclass
class Judged:
    """One output under the official rule: the option it names (-1: none) and whether it is right."""

    chosen: int
    correct: bool


def judge(item: ChoiceItem, output: str | None) -> Judged:
    """Apply the item's benchmark rule to `output`; a missing output (None) names no option."""
    if output is None:
        return Judged(UNANSWERED, False)
    if item.benchmark == "muchomusic":
        chosen = muchomusic_choice(output, item.options)
        return Judged(chosen, chosen != UNANSWERED and chosen == item.correct)
    right = string_match(item.answer, output, item.options)
    chosen = item.correct if right else string_match_choice(output, item.options)
    return Judged(chosen, right)


# ---------------------------------------------------------------- exact baselines


def baseline_outputs(item: ChoiceItem) -> list[str]:
    """What a model that picks an option says: MuChoMusic's letters (the prompt asks for one),
    MMAU/MMAR's option texts (their rule matches text)."""
    if item.benchmark == "muchomusic":
        return list(MUCHOMUSIC_LETTERS[: len(item.options)])
    return list(item.options)


def random_choice_accuracy(item: ChoiceItem) -> float:
    """Expected score of a uniformly random option for this item, exact: the share of the item's
    baseline outputs that the official rule marks right (1/k unless options repeat)."""
    outputs = baseline_outputs(item)
    if not outputs:
        return 0.0
    return sum(judge(item, o).correct for o in outputs) / len(outputs)


def first_choice_correct(item: ChoiceItem) -> bool:
    """Whether always answering the first option shown is right under the official rule."""
    outputs = baseline_outputs(item)
    return bool(outputs) and judge(item, outputs[0]).correct
