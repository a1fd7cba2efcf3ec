"""Exact building blocks of the fast metric path (metric_engine.py), each equal to what the plain
library call computes: METEOR's stemmer and WordNet answered from precomputed tables, ROUGE-L's
longest common subsequence by the bit-parallel algorithm, and NLTK's character sentence BLEU with
each string's n-gram counts computed once. tests/test_metric_engine.py checks each against the library."""

from __future__ import annotations

import math
import operator
from collections import Counter
from fractions import Fraction

from musilingo_cli.pipelines.evaluate.nltk_data import ensure_punkt

_TREEBANK: dict[str, list[str]] = {}  # sentence -> its Treebank tokens (per process; pure)
_MEMO_LIMIT = 200_000  # sentences kept per process before the memo starts afresh


def _treebank(sentence: str) -> list[str]:
    """NLTK's Treebank step (`_treebank_word_tokenizer.tokenize`) of one sentence, memoised."""
    found = _TREEBANK.get(sentence)
    if found is not None:
        return found
    from nltk.tokenize import _treebank_word_tokenizer

    if len(_TREEBANK) > _MEMO_LIMIT:
        _TREEBANK.clear()
    found = _TREEBANK[sentence] = _treebank_word_tokenizer.tokenize(sentence)
    return found


def _word_tokenize():
    """NLTK's `word_tokenize` (english, preserve_line=False) as its source defines it: punkt sentences,
    then the Treebank tokenizer per sentence, memoised per sentence (`_treebank`: MusicCaps captions
    repeat about one sentence in eight)."""
    from nltk.tokenize import sent_tokenize

    ensure_punkt()

    def tokenize(text: str) -> list[str]:
        return [token for sentence in sent_tokenize(text, "english") for token in _treebank(sentence)]

    return tokenize


class _MemoStemmer:
    """A stemmer's `stem` memoised per word (a pure function of the word), for rouge_score's tokenizer."""

    def __init__(self, stemmer) -> None:
        self._stem = stemmer.stem
        self._memo: dict[str, str] = {}

    def stem(self, word: str) -> str:
        found = self._memo.get(word)
        if found is None:
            found = self._memo[word] = self._stem(word)
        return found


class _Stems:
    """A stemmer for meteor_score: Porter stems looked up from a precomputed table (fallback: compute)."""

    def __init__(self, table: dict[str, str]) -> None:
        from nltk.stem.porter import PorterStemmer

        self._table = table
        self._stem = PorterStemmer().stem  # meteor_score's default stemmer

    def stem(self, word: str) -> str:
        try:
            return self._table[word]
        except KeyError:
            value = self._table[word] = self._stem(word)
            return value


class _Lemma:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class _Synonyms:
    """What meteor_score reads of a synset (its lemmas' names), precomputed per word."""

    __slots__ = ("_lemmas",)

    def __init__(self, names: tuple[str, ...]) -> None:
        self._lemmas = [_Lemma(n) for n in names]

    def lemmas(self) -> list[_Lemma]:
        return self._lemmas


def synonym_names(reader, word: str) -> tuple[str, ...]:
    """The distinct lemma names without "_" over `reader.synsets(word)`: exactly the set METEOR's
    `_enum_wordnetsyn_match` builds from them (it drops names with "_" itself). Read from the synsets'
    data lines where the reader can (english_wordnet.EnglishWordNet), else through Synset objects."""
    fast = getattr(reader, "synonym_names", None)
    found = fast(word) if fast is not None else None
    if found is not None:
        return found
    names = dict.fromkeys(
        lemma.name() for synset in reader.synsets(word) for lemma in synset.lemmas() if lemma.name().find("_") < 0
    )
    return tuple(names)


class _WordNet:
    """A `wordnet` for meteor_score: `synsets(word)` answered from a precomputed synonym table, as one
    pseudo-synset holding the lemma names that occur in the current reference (`for_reference`).

    METEOR only takes the union of the names and looks each one up among the reference's unmatched
    words, so names absent from the reference can never match: leaving them out changes no match."""

    def __init__(self, table: dict[str, tuple[str, ...]], reader) -> None:
        self._table = table
        self._reader = reader
        self._sets: dict[str, frozenset[str]] = {}
        self._reference: set[str] = set()

    def for_reference(self, words: set[str]) -> None:
        self._reference = words

    def synsets(self, word: str) -> list[_Synonyms]:
        names = self._sets.get(word)
        if names is None:
            found = self._table.get(word)
            if found is None:
                found = self._table[word] = synonym_names(self._reader, word)
            names = self._sets[word] = frozenset(found)
        found_here = names & self._reference
        return [_Synonyms(tuple(found_here))] if found_here else []  # no synset: the same empty union


# Library imports stay inside functions: `musilingo --help` must not import nltk or sacrebleu.
# Set in the parent before a pool forks; read by the workers (nothing large is pickled to them).


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists, by the bit-parallel algorithm
    (Allison & Dix 1986; Hyyro 2004): one big-integer step per token of `b` instead of a row of
    rouge_score's dynamic-programming table. The same integer as `_lcs_table(a, b)[-1][-1]`."""
    masks: dict[str, int] = {}
    for position, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(target: list[str], prediction: list[str], part: str) -> float:
    """rouge_score's `_score_lcs(target, prediction)` field `part`, with lcs_length for its table: the
    same precision, recall and `scoring.fmeasure` arithmetic."""
    from rouge_score import scoring

    if not target or not prediction:
        return 0.0
    lcs = lcs_length(target, prediction)
    precision = lcs / len(prediction)
    recall = lcs / len(target)
    if part == "recall":
        return float(recall)
    if part == "precision":
        return float(precision)
    return float(scoring.fmeasure(precision, recall))


CHAR_WEIGHTS = ((0.25, 0.25, 0.25, 0.25), (0.0, 0.0, 0.0, 1.0))  # qa.py's B-U and its "BLEU-4"


class _CharGrams(dict):
    """text -> [Counter of its character n-grams for n = 1..4], memoised (nltk's `ngrams` on a string
    yields tuples of characters; a slice of n characters stands for the same n-gram)."""

    def __missing__(self, text: str) -> list[Counter]:
        # the n-grams at each position, built from the (n-1)-grams (map stops at the shorter input)
        two = list(map(operator.add, text, text[1:]))
        three = list(map(operator.add, two, text[2:]))
        value = self[text] = [Counter(text), Counter(two), Counter(three), Counter(map(operator.add, three, text[3:]))]
        return value


def char_bleu(reference: str, prediction: str, grams: _CharGrams) -> tuple[float, float]:
    """NLTK `sentence_bleu([reference], prediction, weights=CHAR_WEIGHTS)` on raw strings (character
    n-grams, no smoothing), with each string's n-gram counts computed once. Reproduces NLTK's
    `modified_precision` and `corpus_bleu` arithmetic step for step, with NLTK's own
    `brevity_penalty` and `SmoothingFunction().method0`; tests/test_metric_engine.py checks equality."""
    from nltk.translate.bleu_score import SmoothingFunction, brevity_penalty

    hyp, ref = grams[prediction], grams[reference]
    # clipped counts summed over the n-grams both strings have (the others add min(count, 0) = 0)
    numerators = [sum([min(hyp[n][gram], ref[n][gram]) for gram in hyp[n].keys() & ref[n].keys()]) for n in range(4)]
    if numerators[0] == 0:
        return 0.0, 0.0
    # sum(hyp[n].values()): a string of length L has max(0, L - n) n-grams of n + 1 characters
    denominators = [max(1, len(prediction) - n) for n in range(4)]
    p_n = [Fraction(num, den, _normalize=False) for num, den in zip(numerators, denominators)]
    bp = brevity_penalty(len(reference), len(prediction))
    p_n = SmoothingFunction().method0(p_n, references=[reference], hypothesis=prediction, hyp_len=len(prediction))
    scores = []
    for weight in CHAR_WEIGHTS:
        terms = (w_i * math.log(p_i) for w_i, p_i in zip(weight, p_n) if p_i > 0)
        scores.append(float(bp * math.exp(math.fsum(terms))))
    return scores[0], scores[1]
