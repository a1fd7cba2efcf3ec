"""Texts written without spaces between words (issue 12, item 11): identical Chinese, Japanese and
Thai answers score as identical, partial overlaps score by character, English scores do not move.
Real sacrebleu, rouge-score and NLTK; expected values worked out by hand in the comments."""

import math

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from musilingo_cli.pipelines.evaluate import metrics
from musilingo_cli.pipelines.evaluate.scripts import RougeTokenizer, spaced

TEXTS = {
    "zh": ["音乐很安静，钢琴声很美。", "这是一首快节奏的摇滚歌曲", "女声在唱歌"],
    "ja": ["静かなピアノの曲です。", "ギターとドラムが聞こえる", "男性の声で歌っている"],
    "th": ["เพลงนี้มีเปียโนเบาๆ", "เสียงกลองดังมาก", "นักร้องหญิงร้องเพลง"],
}


def _meteor_identical(text: str) -> float:
    """NLTK METEOR of a text against itself: fmean 1, one chunk of m matches, penalty 0.5 (1/m)^3."""
    m = len(spaced(text).split())
    return 1 - 0.5 * (1 / m) ** 3


@pytest.mark.parametrize("language", sorted(TEXTS))
@pytest.mark.parametrize("profile", metrics.PROFILES)
def test_identical_texts_score_as_identical(language, profile):
    texts = TEXTS[language]
    result = metrics.score(texts, texts, profile, bert=None)
    for key in ("bleu4", "bleu_mean", "rouge_l"):
        assert result.scores[key] == pytest.approx(1.0), key
    if profile == "standard":
        for n in (1, 2, 3):
            assert result.scores[f"bleu{n}"] == pytest.approx(1.0)
    assert [item["rouge_l"] for item in result.per_item] == [1.0, 1.0, 1.0]
    assert [item["meteor"] for item in result.per_item] == pytest.approx([_meteor_identical(t) for t in texts])
    assert any("items 1, 2, 3" in note and "one token per character" in note for note in result.notes)


def test_chinese_partial_overlap_scores_by_character():
    # reference 我喜欢音乐 / prediction 我喜欢钢琴: 3 of 5 characters match, in order
    result = metrics.score(["我喜欢钢琴"], ["我喜欢音乐"], "standard", bert=None)
    assert result.scores["bleu1"] == pytest.approx(0.6)  # unigram precision 3/5, no brevity penalty
    assert result.scores["bleu2"] == pytest.approx(math.sqrt(0.6 * 2 / 4))  # bigrams 我喜 喜欢 match of 4
    assert result.scores["rouge_l"] == pytest.approx(0.6)  # LCS 3: P = R = 3/5
    assert "tok:zh" in result.signatures["bleu"]  # sacrebleu's own Chinese tokenizer


def test_japanese_and_thai_use_per_character_tokens_for_bleu():
    result = metrics.score(["静かなピアノ"], ["静かなギター"], "standard", bert=None)
    assert result.scores["bleu1"] == pytest.approx(3 / 6)  # 静 か な match; ピ ア ノ do not
    assert "tok:13a" in result.signatures["bleu"] and "one token per" in result.signatures["bleu"]


def test_english_scores_do_not_change():
    predictions = ["A calm piano piece with soft strings.", "Loud rock drums and electric guitars playing."]
    references = ["A calm piano ballad with soft strings.", "Fast punk drums, electric guitars and shouting."]
    result = metrics.score(predictions, references, "standard", bert=None)
    bleu = BLEU(max_ngram_order=4, smooth_method="none", tokenize="13a")
    assert result.scores["bleu4"] == pytest.approx(bleu.corpus_score(predictions, [references]).score / 100)
    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    assert [i["rouge_l"] for i in result.per_item] == [
        plain.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)
    ]
    assert not any("one token per character" in n for n in result.notes)
    assert result.signatures["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|")


def test_mixed_corpus_keeps_english_items_as_before():
    predictions = ["A calm piano piece.", "女声在唱歌"]
    references = ["A calm piano ballad.", "女声在唱歌"]
    result = metrics.score(predictions, references, "musilingo-paper", bert=None)
    stemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert result.per_item[0]["rouge_l"] == stemmed.score(references[0], predictions[0])["rougeL"].recall
    assert result.per_item[1]["rouge_l"] == 1.0
    assert any("(items 2)" in note for note in result.notes)


def test_rouge_tokenizer_keeps_latin_words_and_splits_han():
    assert RougeTokenizer(use_stemmer=True).tokenize("Playing 钢琴 pianos，好") == ["play", "钢", "琴", "piano", "好"]
