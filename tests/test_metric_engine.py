"""The fast metric path (metric_engine) gives exactly the plain loop's numbers: the same floats,
item by item, for both profiles, in-process and across forked workers."""

import csv
import random
from pathlib import Path

import pytest
from eval_helpers import wordnet  # noqa: F401  (fixture)

from musilingo_cli.pipelines.evaluate import metric_engine, metrics
from musilingo_cli.pipelines.evaluate.cider import CiderD, cider_d, cider_text
from musilingo_cli.pipelines.evaluate.metric_kernels import _word_tokenize

CAPTIONS = [
    row["caption"]
    for row in csv.DictReader((Path(__file__).parent / "data" / "musiccaps_excerpt.csv").open(encoding="utf-8"))
]


def _rows():
    refs = CAPTIONS[:16]
    preds = refs[1:] + refs[:1]
    preds[3], preds[5], preds[8] = "", "Yes", refs[8]  # empty, one word, identical
    floor = refs[7:] + refs[:7]
    return [preds, floor], refs


_PLAIN: dict = {}


def _plain(preds, refs, profile):
    key = (tuple(preds), profile)
    if key not in _PLAIN:
        _PLAIN[key] = _compute_plain(preds, refs, profile)
    return _PLAIN[key]


def _compute_plain(preds, refs, profile):
    if profile == "standard":
        bleu = {f"bleu{n}": metrics.corpus_bleu(preds, refs, n) for n in (1, 2, 3, 4)}
        meteor = metrics.meteor_scores(preds, refs, "word_tokenize")
        rouge = metrics.rouge_l_scores(preds, refs, stemmer=False, part="fmeasure")
        bleu["cider_d"], cider = cider_d(preds, [[r] for r in refs])  # pycocoevalcap's Cider().compute_score
        return bleu, [{"meteor": m, "rouge_l": r, "cider_d": c} for m, r, c in zip(meteor, rouge, cider)]
    meteor = metrics.meteor_scores(preds, refs, "wordpunct")
    rouge = metrics.rouge_l_scores(preds, refs, stemmer=True, part="recall")
    items = [
        {
            "bleu_mean": metrics.char_sentence_bleu(r, p),
            "bleu4": metrics.char_sentence_bleu(r, p, (0.0, 0.0, 0.0, 1.0)),
            "meteor": m,
            "rouge_l": rl,
        }
        for p, r, m, rl in zip(preds, refs, meteor, rouge)
    ]
    return {}, items


@pytest.mark.parametrize("profile", ["standard", "musilingo-paper"])
@pytest.mark.parametrize("workers", [1, 2])
def test_engine_equals_plain_loop_exactly(profile, workers, wordnet, monkeypatch):
    monkeypatch.setattr(metric_engine, "MIN_PARALLEL", 2)  # so that workers=2 really forks on 32 pairs
    rows, refs = _rows()
    results = metric_engine.text_scores(rows, refs, profile, workers=workers)
    for row, (scores, items) in zip(rows, results):
        corpus, plain_items = _plain(row, refs, profile)
        assert items == plain_items  # every per-item float identical
        for key, value in corpus.items():
            assert scores[key] == value
        assert scores["meteor"] == metrics._mean([i["meteor"] for i in plain_items])


def test_score_rows_equals_scoring_each_row_alone(wordnet, monkeypatch):
    monkeypatch.setattr(metric_engine, "MIN_PARALLEL", 2)
    rows, refs = _rows()
    together = metrics.score_rows(rows, refs, "standard", workers=2)
    alone = [metrics.score_rows([row], refs, "standard", workers=1)[0] for row in rows]
    assert [r.scores for r in together] == [r.scores for r in alone]
    assert [r.per_item for r in together] == [r.per_item for r in alone]


def test_lcs_length_matches_rouge_score_table():
    from rouge_score.rouge_scorer import _lcs_table

    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randrange(1, 40))]
        b = [rng.choice("abcdef") for _ in range(rng.randrange(1, 40))]
        assert metric_engine.lcs_length(a, b) == _lcs_table(a, b)[-1][-1]
    assert metric_engine.lcs_length(list("abcbdab"), list("bdcaba")) == 4  # the textbook example


@pytest.mark.parametrize(
    "reference, prediction",
    [("", ""), ("abc", "a"), ("a", "abc"), ("abcd", "abcd"), ("xyz", "abc"), ("Yes, it is", "Yes"), ("ab", "ab")],
)
def test_char_bleu_matches_nltk_on_edge_cases(reference, prediction):
    grams = metric_engine._CharGrams()
    expected = (
        metrics.char_sentence_bleu(reference, prediction),
        metrics.char_sentence_bleu(reference, prediction, (0.0, 0.0, 0.0, 1.0)),
    )
    assert metric_engine.char_bleu(reference, prediction, grams) == expected


def test_cider_d_kernel_equals_pycocoevalcap_with_several_references():
    # several references per item, repeated texts (memoised vectors), an empty hypothesis, case and punctuation
    tokenize = _word_tokenize()
    preds = [CAPTIONS[0], CAPTIONS[1].upper(), "", CAPTIONS[2], CAPTIONS[3]]
    refs = [[CAPTIONS[0], CAPTIONS[4]], [CAPTIONS[1]], [CAPTIONS[5], CAPTIONS[6], CAPTIONS[7]], [CAPTIONS[2]], ["x"]]
    corpus, values = cider_d(preds, refs)
    kernel = CiderD([[cider_text(r, tokenize) for r in item] for item in refs])
    ours = [
        kernel.item(cider_text(p, tokenize), [cider_text(r, tokenize) for r in item]) for p, item in zip(preds, refs)
    ]
    assert ours == values
    assert CiderD.corpus(ours) == corpus
    assert values[0] > 0 and values[2] == 0.0


EDGE_TEXTS = [
    "CANNOT stop. GONNA rock! Mr. Smith plays E.G. piano (solo)...",
    "Don't STOP; it's LOUD 'n' CLEAR -- \"Quoted\" [Intro] {x} <y> 3,5 $3.88 ... end.",
    "Ünïcode Café SONG: ÉTÉ.",
    "WANNA dance? Gimme MORE'N that, gotta go.",
]


def test_memoised_word_tokenize_equals_nltk_word_tokenize():
    from nltk.tokenize import word_tokenize

    tokenize = _word_tokenize()
    texts = CAPTIONS + EDGE_TEXTS
    assert [tokenize(t) for t in texts] == [word_tokenize(t) for t in texts]
    assert [tokenize(t) for t in texts] == [word_tokenize(t) for t in texts]  # from the memo


def test_forked_workers_read_wordnet_on_their_own_files(wordnet):
    """Workers forked after the parent read WordNet must not share its open data files (one file
    offset for all: concurrent seeks read each other's lines and NLTK finds no synset at an offset)."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "musiccaps-public.csv"  # ../shared
    refs = [row["caption"] for row in csv.DictReader(shared.open(encoding="utf-8"))][:300]
    preds = refs[1:] + refs[:1]
    alone = metrics.score_rows([preds], refs, "standard", workers=1)[0]
    forked = metrics.score_rows([preds], refs, "standard", workers=2)[0]
    assert forked.scores == alone.scores


def test_english_wordnet_equals_nltk_reader(wordnet):
    """The fast load builds NLTK's own lemma index, satellites and exceptions, and `synonym_names`
    reads the same lemma names as NLTK's Synset objects (markers such as "galore(ip)" stripped)."""
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from musilingo_cli.pipelines.evaluate.metric_kernels import synonym_names
    from musilingo_cli.pipelines.evaluate.nltk_data import wordnet_reader

    fast = wordnet_reader()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
    assert dict(fast._lemma_pos_offset_map) == dict(plain._lemma_pos_offset_map)
    assert fast.satellite_offsets == plain.satellite_offsets and fast._exception_map == plain._exception_map
    words = {w for caption in CAPTIONS for w in caption.replace(".", " ").replace(",", " ").split()}
    words |= {"galore", "outback", "better", "geese", "ran", "Trumpets", "hot_dog", "used_to", "xyzzy"}

    def nltk_names(word):
        names = (lemma.name() for synset in plain.synsets(word) for lemma in synset.lemmas())
        return tuple(dict.fromkeys(name for name in names if "_" not in name))

    for word in sorted(words):
        assert synonym_names(fast, word) == nltk_names(word), word
    assert "galore" in synonym_names(fast, "galore") and synonym_names(fast, "xyzzy") == ()
