"""CIDEr-D from pycocoevalcap: values derived by hand from its definition (cider_scorer.py), and its
place in the standard profile."""

import math

from musilingo_cli.pipelines.evaluate import metrics
from musilingo_cli.pipelines.evaluate.cider import cider_d, cider_text
from musilingo_cli.pipelines.evaluate.metric_engine import _word_tokenize


def test_cider_d_hand_computed_two_images():
    # Two items; df over the references: every n-gram occurs in one of 2 items, idf = log 2 for all.
    # Item 1: hypothesis = its reference: cosine 1 for n = 1, 2; no 3-, 4-grams (norm 0 -> 0); no length
    # penalty; mean over n = 2/4, x10 = 5.0. Item 2 shares nothing: 0. Corpus: mean = 2.5.
    score, scores = cider_d(["a b", "x y"], [["a b"], ["c d"]])
    assert scores == [5.0, 0.0]
    assert score == 2.5


def test_cider_d_averages_over_several_references_and_ignores_case_and_punctuation():
    # A second reference sharing nothing halves item 1's value (pycocoevalcap divides by len(refs)).
    score, scores = cider_d(["A b.", "x y"], [["a b", "q r"], ["c d"]])
    assert scores == [2.5, 0.0]
    assert math.isclose(score, 1.25)


def test_cider_text_is_ptb_like():
    assert cider_text("Soft, slow Piano (solo)!", _word_tokenize()) == "soft slow piano solo"
    # tokenised as written, then lower-cased (PTBTokenizer -lowerCase): "dON't" is one token as written,
    # whereas "don't" would split into "do n't"
    assert cider_text("dON't stop.", _word_tokenize()) == "don't stop"


def test_cider_d_in_standard_profile_only():
    preds = ["a calm piano piece", "loud rock with drums"]
    refs = ["a calm piano piece", "an ambient synth pad"]
    standard = metrics.score(preds, refs, "standard", None)
    assert standard.scores["cider_d"] == cider_d(preds, [[r] for r in refs])[0]
    assert standard.scores["cider_d"] > 0
    assert [item["cider_d"] for item in standard.per_item][1] == 0.0
    assert "cider_d" in standard.signatures
    assert metrics.score(preds, refs, "musilingo-paper", None).scores["cider_d"] is None
