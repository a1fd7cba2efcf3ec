"""The benchmarks' official answer rules on hand-made cases. Each expected value is derived by hand
from the published code: MuChoMusic `muchomusic_eval/scoring.py::extract_responses` (letters are
single characters intersected with the text; then option substrings in order; else -1) and MMAU
`evaluation.py::string_match` (= MMAR `code/evaluation.py`)."""

import pytest

from musilingo_cli.pipelines.evaluate import choice_rules as rules
from musilingo_cli.pipelines.evaluate.choice import score_outputs

GENRES = ["jazz", "blues", "rock", "pop"]


@pytest.mark.parametrize(
    "output, expected",
    [
        ("B", 1),
        ("(C) rock", 2),
        ("The correct answer is: D", 3),
        # only the text after the LAST cue counts
        ("The correct answer is: A. Hmm. The correct answer is: C", 2),
        # two distinct letters: no letter; then option substrings, first in the order shown
        ("A or B", -1),
        ("A or B, I would say rock", 2),
        # a capital letter inside a word is a letter to scoring.py: "Blues" reads as B
        ("Blues", 1),
        ("Definitely blues", 3),  # 'D' of "Definitely" is the one letter: D, not the option text
        ("definitely jazz", 0),  # lower case: no letter, then the substring "jazz"
        ("I love pop music", 3),  # 'I' is no option letter; "pop" is option 3
        ("it sounds like rock and roll", 2),
        ("", -1),
        ("no idea", -1),
        ("a", -1),  # lower-case letters are not letters to scoring.py
    ],
)
def test_muchomusic_extract_responses(output, expected):
    assert rules.muchomusic_choice(output, GENRES) == expected


def test_muchomusic_first_matching_option_wins():
    # "rock" is a substring of "rock and roll" and comes first: scoring.py breaks at the first hit
    assert rules.muchomusic_choice("rock and roll", ["rock", "rock and roll", "x", "y"]) == 0
    assert rules.muchomusic_choice("rock and roll", ["rock and roll", "rock", "x", "y"]) == 0


CHOICES = ["A child", "A woman", "An adult man", "A teenager"]


@pytest.mark.parametrize(
    "answer, prediction, expected",
    [
        ("Man", "Man", True),
        ("Man", "the man.", True),
        ("Man", "woman", False),  # {"woman"} lacks "man"
        ("Man", "man or woman", False),  # "woman" is a wrong choice's token
        ("Man", "", False),
        ("Man", "B", False),
        ("A child", "a child", True),
        ("A child", "child", False),  # the answer token "a" is missing
        ("A child", "A child, not an adult", False),  # "an" and "adult" belong to a wrong choice only
        ("A child", "(A) A child", True),  # "a" is shared with the answer, so it is not a wrong token
        ("An adult man", "an adult man, surely", True),
    ],
)
def test_mmau_string_match(answer, prediction, expected):
    choices = ["Man", "Woman", "Child", "Robot"] if answer == "Man" else CHOICES
    assert rules.string_match(answer, prediction, choices) is expected


def test_string_match_ignores_a_wrong_choice_with_the_answers_tokens():
    choices = ["Rock", "rock", "Jazz", "Pop"]
    assert rules.string_match("Rock", "ROCK!", choices)
    assert not rules.string_match("Rock", "rock jazz", choices)


def test_string_match_choice_names_the_option_or_none():
    choices = ["Man", "Woman", "Child", "Robot"]
    assert rules.string_match_choice("(B) Woman", choices) == 1
    assert rules.string_match_choice("B", choices) == -1  # a bare letter names no option for MMAU
    assert rules.string_match_choice("man or woman", choices) == -1


def _mmau(answer, choices, **groups):
    return rules.ChoiceItem(
        "x", "mmau", "q", choices, choices.index(answer), answer, None, None, {k: [v] for k, v in groups.items()}
    )


def _mucho(options, orders, **groups):
    return rules.ChoiceItem(
        "x:0",
        "muchomusic",
        "p",
        options,
        orders.index(0),
        options[orders.index(0)],
        None,
        "p",
        {k: v for k, v in groups.items()},
    )


def test_baselines_are_exact_under_each_rule():
    item = _mmau("Woman", ["Man", "Woman", "Child", "Robot"])
    assert rules.random_choice_accuracy(item) == 0.25
    assert rules.first_choice_correct(item) is False
    assert rules.first_choice_correct(_mmau("Man", ["Man", "Woman", "Child", "Robot"])) is True
    # two options with the same tokens both count as the answer under string_match
    assert rules.random_choice_accuracy(_mmau("Rock", ["Rock", "rock", "Jazz", "Pop"])) == 0.5
    # three options: 1/3
    assert rules.random_choice_accuracy(_mmau("Yes", ["Yes", "No", "Maybe"])) == pytest.approx(1 / 3)
    mucho = _mucho(["blues", "jazz", "rock", "pop"], [2, 0, 1, 3])  # the right answer is shown as B
    assert rules.random_choice_accuracy(mucho) == 0.25
    assert rules.first_choice_correct(mucho) is False
    assert rules.first_choice_correct(_mucho(["jazz", "blues", "rock", "pop"], [0, 2, 1, 3])) is True


def test_totals_count_unanswered_and_missing_outputs_without_guessing():
    items = [
        _mmau("Man", ["Man", "Woman", "Child", "Robot"], category="Reasoning", difficulty="easy"),
        _mmau("Woman", ["Man", "Woman", "Child", "Robot"], category="Reasoning", difficulty="hard"),
        _mmau("Child", ["Man", "Woman", "Child", "Robot"], category="Perception", difficulty="hard"),
        _mmau("Robot", ["Man", "Woman", "Child", "Robot"], category="Perception", difficulty="easy"),
    ]
    totals, breakdowns, judged = score_outputs(items, ["the man", "robot", "I cannot tell", None])
    assert (totals["n"], totals["correct"], totals["unanswered"], totals["no_output"]) == (4, 1, 2, 1)
    assert totals["accuracy"] == 0.25 and totals["unanswered_rate"] == 0.5
    assert totals["random_choice"] == 0.25 and totals["first_choice"] == 0.25  # only item 1 has its answer first
    assert [j.chosen for j in judged] == [0, 3, -1, -1]
    assert breakdowns["category"]["Reasoning"]["accuracy"] == 0.5
    assert breakdowns["category"]["Perception"]["unanswered"] == 2
    assert breakdowns["difficulty"]["hard"]["n"] == 2


def test_muchomusic_breakdowns_count_an_item_under_each_of_its_labels():
    items = [
        _mucho(
            ["a1", "a2", "a3", "a4"], [0, 1, 2, 3], reasoning=["temporal", "harmonic"], knowledge=[], genre=["Rock"]
        ),
        _mucho(["b1", "b2", "b3", "b4"], [1, 0, 2, 3], reasoning=["temporal"], knowledge=["melody"], genre=["Jazz"]),
    ]
    totals, breakdowns, _ = score_outputs(items, ["A", "The correct answer is: A"])
    assert totals["correct"] == 1
    assert breakdowns["reasoning"]["temporal"]["n"] == 2 and breakdowns["reasoning"]["harmonic"]["accuracy"] == 1.0
    assert breakdowns["knowledge"] == {"melody": breakdowns["knowledge"]["melody"]}
    assert breakdowns["genre"]["Jazz"]["accuracy"] == 0.0
