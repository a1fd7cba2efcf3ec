"""The profiles' text metrics computed fast and exactly: the same library functions as the plain
loop (metrics.corpus_bleu, meteor_scores, rouge_l_scores, char_sentence_bleu), with the repeated
work removed. Numbers are identical to the plain loop, bit for bit (tests/test_metric_engine.py).

- Several rows (the model's answers and the floor's shuffled references) share one pass: each
  distinct string is tokenised once per worker, references once for all rows.
- BLEU (standard): one sacrebleu corpus pass at order 4 per row; BLEU-1..3 come from the same
  n-gram counts through sacrebleu's own `BLEU.compute_bleu` (what `corpus_score` calls at order n).
- METEOR: NLTK's `meteor_score` with a memoised Porter stemmer and memoised WordNet synset lookups
  (both pure functions of the word); WordNet is read without NLTK's WordNet-3.0-to-3.0 offset map
  for the multilingual OMW data, which English lookups never read (nltk_data.wordnet_reader).
- ROUGE-L: rouge_score's tokenizer once per string, then its own `_score_lcs`.
- Character BLEU (musilingo-paper): NLTK's sentence BLEU arithmetic with both weight vectors at
  once and each string's character n-gram counts computed once (char_bleu).
- Items are split across all cores with forked workers (the parent's loaded WordNet is shared).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import warnings
from collections import Counter
from fractions import Fraction

from musilingo_cli.pipelines.evaluate.nltk_data import ensure_punkt, wordnet_reader

MIN_PARALLEL = 64  # fewer item pairs than this are scored in-process (a pool costs more than it saves)


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
    `_enum_wordnetsyn_match` builds from them (it drops names with "_" itself)."""
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
_JOB: dict = {}


def _word_tokenize():
    """NLTK's `word_tokenize` (english, preserve_line=False) as its source defines it: punkt sentences,
    then the Treebank tokenizer per sentence, with the Treebank step memoised per sentence (MusicCaps
    captions repeat about one sentence in eight)."""
    from nltk.tokenize import _treebank_word_tokenizer, sent_tokenize

    ensure_punkt()
    memo: dict[str, list[str]] = {}

    def treebank(sentence: str) -> list[str]:
        try:
            return memo[sentence]
        except KeyError:
            value = memo[sentence] = _treebank_word_tokenizer.tokenize(sentence)
            return value

    def tokenize(text: str) -> list[str]:
        return [token for sentence in sent_tokenize(text, "english") for token in treebank(sentence)]

    return tokenize


def _tokenizers(profile: str):
    from rouge_score import rouge_scorer

    if profile == "standard":
        meteor_tok = _word_tokenize()
    else:
        from nltk.tokenize import wordpunct_tokenize as meteor_tok
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=profile != "standard")
    return meteor_tok, scorer._tokenizer.tokenize


def _tokenize_range(bounds: tuple[int, int]) -> list[tuple[list[str], list[str]]]:
    """(METEOR tokens, ROUGE tokens) of strings[start:stop]."""
    meteor_tok, rouge_tok = _tokenizers(_JOB["profile"])
    return [(meteor_tok(text), rouge_tok(text)) for text in _JOB["items"][bounds[0] : bounds[1]]]


def _stems_range(bounds: tuple[int, int]) -> list[str]:
    """Porter stems (meteor_score's default stemmer) of words[start:stop]."""
    from nltk.stem.porter import PorterStemmer

    stem = PorterStemmer().stem
    return [stem(word) for word in _JOB["items"][bounds[0] : bounds[1]]]


def _synonyms_range(bounds: tuple[int, int]) -> list[tuple[str, ...] | None]:
    """WordNet synonym names of words[start:stop] (None: left to the lookup at use)."""
    reader = wordnet_reader()

    def names(word: str) -> tuple[str, ...] | None:
        try:
            return synonym_names(reader, word)
        except Exception:  # noqa: BLE001 - left to the lookup at use, which then fails exactly as NLTK's would
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns about synsets it cannot find at an offset
        return [names(word) for word in _JOB["items"][bounds[0] : bounds[1]]]


class _StemSets(dict):
    """text -> the set of Porter stems of its lower-cased METEOR tokens, memoised: the words METEOR's
    WordNet step compares (it runs on the stem step's leftovers, which are stems)."""

    def __init__(self, tokens: dict, stemmer: _Stems) -> None:
        super().__init__()
        self._tokens = tokens
        self._stem = stemmer.stem

    def __missing__(self, text: str) -> set[str]:
        value = self[text] = {self._stem(w.lower()) for w in self._tokens[text][0]}
        return value


def _pairs_range(bounds: tuple[int, int]) -> list[tuple[float, ...]]:
    """METEOR, ROUGE-L (and character BLEU for musilingo-paper) of pairs[start:stop]."""
    from nltk.translate.meteor_score import meteor_score

    profile, tokens = _JOB["profile"], _JOB["tokens"]
    part = "fmeasure" if profile == "standard" else "recall"
    stemmer, wordnet = _Stems(_JOB["stems"]), _WordNet(_JOB["synonyms"], wordnet_reader())
    stem_sets = _StemSets(tokens, stemmer)
    grams = _CharGrams()
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on every zero n-gram overlap
        for prediction, reference in _JOB["items"][bounds[0] : bounds[1]]:
            (p_meteor, p_rouge), (r_meteor, r_rouge) = tokens[prediction], tokens[reference]
            wordnet.for_reference(stem_sets[reference])
            meteor = float(meteor_score([r_meteor], p_meteor, stemmer=stemmer, wordnet=wordnet))
            rouge = rouge_l(r_rouge, p_rouge, part)
            if profile == "standard":
                out.append((meteor, rouge))
            else:
                out.append((meteor, rouge, *char_bleu(reference, prediction, grams)))
    return out


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
        value = self[text] = [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for n in (1, 2, 3, 4)]
        return value


def char_bleu(reference: str, prediction: str, grams: _CharGrams) -> tuple[float, float]:
    """NLTK `sentence_bleu([reference], prediction, weights=CHAR_WEIGHTS)` on raw strings (character
    n-grams, no smoothing), with each string's n-gram counts computed once. Reproduces NLTK's
    `modified_precision` and `corpus_bleu` arithmetic step for step, with NLTK's own
    `brevity_penalty` and `SmoothingFunction().method0`; tests/test_metric_engine.py checks equality."""
    from nltk.translate.bleu_score import SmoothingFunction, brevity_penalty

    hyp, ref = grams[prediction], grams[reference]
    numerators = [sum(min(count, ref[n].get(gram, 0)) for gram, count in hyp[n].items()) for n in range(4)]
    if numerators[0] == 0:
        return 0.0, 0.0
    denominators = [max(1, sum(hyp[n].values())) for n in range(4)]
    p_n = [Fraction(num, den, _normalize=False) for num, den in zip(numerators, denominators)]
    bp = brevity_penalty(len(reference), len(prediction))
    p_n = SmoothingFunction().method0(p_n, references=[reference], hypothesis=prediction, hyp_len=len(prediction))
    scores = []
    for weight in CHAR_WEIGHTS:
        terms = (w_i * math.log(p_i) for w_i, p_i in zip(weight, p_n) if p_i > 0)
        scores.append(float(bp * math.exp(math.fsum(terms))))
    return scores[0], scores[1]


def default_workers() -> int:
    """The cores this process may use (sched_getaffinity where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _bounds(n: int, pieces: int) -> list[tuple[int, int]]:
    return [(n * k // pieces, n * (k + 1) // pieces) for k in range(pieces)]


def _parallel(workers: int, n: int) -> bool:
    return workers > 1 and n >= MIN_PARALLEL and sys.platform == "linux"


def _map(fn, items: list, workers: int, **job) -> list:
    """fn over contiguous ranges of `items`, in forked workers when worth it; results in order."""
    _JOB.update(items=items, **job)
    if not _parallel(workers, len(items)):
        return fn((0, len(items)))
    # several ranges per worker, so a slow range does not leave a core idle
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [row for chunk in pool.map(fn, _bounds(len(items), workers * 4)) for row in chunk]


def _bleu_range(bounds: tuple[int, int]) -> list[tuple[list[int], list[int], int, int]]:
    """sacrebleu's order-4 statistics (matches, totals, hypothesis length, reference length) of each
    row's items[start:stop]; the references' n-grams are extracted once for all rows."""
    from sacrebleu.metrics import BLEU

    start, stop = bounds
    refs = _JOB["references"][start:stop]
    if start == stop:
        return [([0] * 4, [0] * 4, 0, 0) for _ in _JOB["rows"]]
    bleu = BLEU(max_ngram_order=4, smooth_method="none", tokenize="13a", references=[refs])
    out = []
    for row in _JOB["rows"]:
        stats = bleu.corpus_score(row[start:stop], None)
        out.append((list(stats.counts), list(stats.totals), stats.sys_len, stats.ref_len))
    return out


def _bleu_from_stats(parts: list) -> list[list[float]]:
    """BLEU-1..4 per row from summed statistics, through sacrebleu's own `BLEU.compute_bleu` (what
    `corpus_score` calls on the summed sentence statistics; the statistics are integer sums)."""
    from sacrebleu.metrics import BLEU

    out = []
    for row in range(len(parts[0])):
        counts = [sum(part[row][0][k] for part in parts) for k in range(4)]
        totals = [sum(part[row][1][k] for part in parts) for k in range(4)]
        sys_len, ref_len = sum(part[row][2] for part in parts), sum(part[row][3] for part in parts)
        out.append(
            [
                BLEU.compute_bleu(counts[:n], totals[:n], sys_len, ref_len, "none", max_ngram_order=n).score / 100.0
                for n in (1, 2, 3, 4)
            ]
        )
    return out


def _per_pair(
    rows: list[list[str]], references: list[str], profile: str, workers: int | None
) -> tuple[list[tuple], list[list[float]] | None]:
    """Per-pair values for every (row item, reference), rows one after another, and BLEU-1..4 per
    row (standard profile). Tokenising and BLEU run in workers while the parent loads WordNet."""
    workers = default_workers() if workers is None else workers
    try:
        _JOB.clear()
        _JOB.update(profile=profile, rows=rows, references=references)
        strings = list(dict.fromkeys([*references, *(p for row in rows for p in row)]))
        _JOB["items"] = strings
        standard = profile == "standard"
        if _parallel(workers, len(strings)):
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pending = pool.map_async(_tokenize_range, _bounds(len(strings), workers * 4))
                stats = pool.map_async(_bleu_range, _bounds(len(references), workers * 2)) if standard else None
                wordnet_reader()  # loaded here meanwhile; later forks share it
                tokenized = [row for chunk in pending.get() for row in chunk]
                bleu_parts = stats.get() if standard else None
        else:
            tokenized = _tokenize_range((0, len(strings)))
            bleu_parts = [_bleu_range((0, len(references)))] if standard else None
            wordnet_reader()
        tokens = dict(zip(strings, tokenized))
        words = sorted({w.lower() for meteor_tokens, _ in tokens.values() for w in meteor_tokens})
        stems = dict(zip(words, _map(_stems_range, words, 1)))
        # METEOR's WordNet step looks up the stems of the hypothesis words (the stem step's leftovers)
        hyp_stems = sorted({stems[w.lower()] for row in rows for p in row for w in tokens[p][0]})
        looked_up = _map(_synonyms_range, hyp_stems, workers)
        synonyms = {word: names for word, names in zip(hyp_stems, looked_up) if names is not None}
        pairs = [(p, r) for row in rows for p, r in zip(row, references)]
        values = _map(_pairs_range, pairs, workers, tokens=tokens, stems=stems, synonyms=synonyms)
        return values, (_bleu_from_stats(bleu_parts) if standard and references else None)
    finally:
        _JOB.clear()


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def text_scores(
    rows: list[list[str]], references: list[str], profile: str, workers: int | None = None
) -> list[tuple[dict[str, float | None], list[dict[str, float]]]]:
    """The profile's text metrics (no BERTScore) for each row of predictions against `references`.

    rows: lists of predictions, each aligned with `references` (e.g. [model answers, floor answers]).
    Returns per row (corpus scores keyed like metrics.METRIC_KEYS, per-item score dicts). BLEU keys
    are corpus values (standard) or item means (musilingo-paper), as metrics.score defines them.
    workers: processes for the per-item metrics (None: all cores; 1: in-process).
    """
    for row in rows:
        if len(row) != len(references):
            raise ValueError(f"{len(row)} predictions but {len(references)} references")
    values, bleus = _per_pair(rows, references, profile, workers) if references else ([], None)
    out = []
    n = len(references)
    for index in range(len(rows)):
        chunk = values[index * n : (index + 1) * n]
        scores: dict[str, float | None] = {}
        per_item: list[dict[str, float]] = []
        if profile == "standard":
            per_item = [{"meteor": m, "rouge_l": r} for m, r in chunk]
            if bleus is not None:
                for order, value in enumerate(bleus[index], start=1):
                    scores[f"bleu{order}"] = value
                scores["bleu_mean"] = math.fsum(bleus[index]) / 4
        else:
            per_item = [{"bleu_mean": b, "bleu4": b4, "meteor": m, "rouge_l": r} for m, r, b, b4 in chunk]
            scores["bleu_mean"] = _mean([item["bleu_mean"] for item in per_item])
            scores["bleu4"] = _mean([item["bleu4"] for item in per_item])
        scores["meteor"] = _mean([item["meteor"] for item in per_item])
        scores["rouge_l"] = _mean([item["rouge_l"] for item in per_item])
        out.append((scores, per_item))
    return out
