"""The profiles' text metrics computed fast and exactly: the same library functions as the plain
loop (metrics.corpus_bleu, meteor_scores, rouge_l_scores, char_sentence_bleu), with the repeated
work removed. Numbers are identical to the plain loop, bit for bit (tests/test_metric_engine.py).

- Several rows (the model's answers and the floor's shuffled references) share one pass: each
  distinct string is tokenised once per worker, references once for all rows.
- BLEU (standard): one sacrebleu corpus pass at order 4 per row; BLEU-1..3 come from the same
  n-gram counts through sacrebleu's own `BLEU.compute_bleu` (what `corpus_score` calls at order n).
- CIDEr-D (standard): cider.CiderD, pycocoevalcap's arithmetic with the document frequencies
  counted once for all rows (in parts, by the tokenising workers) and each text's vector once per worker.
- METEOR: NLTK's `meteor_score` with Porter stems and WordNet synonyms looked up once per word
  (pure functions of the word; its WordNet step is shown only the synonyms present in the
  reference, the only ones it can match); WordNet loads from whole files and synonyms are read from
  the synsets' data lines (english_wordnet.EnglishWordNet: NLTK's index and names, checked equal).
- ROUGE-L: rouge_score's tokenizer once per string (its Porter stemmer memoised per word); the LCS
  length by the bit-parallel algorithm, then rouge_score's own precision/recall/F arithmetic
  (metric_kernels.rouge_l).
- Character BLEU (musilingo-paper): NLTK's sentence BLEU arithmetic with both weight vectors at
  once and each string's character n-gram counts computed once (char_bleu).
- Items are split across all cores with forked workers (the parent's loaded WordNet is shared), each
  item's pairs of all rows together, so a worker prepares each reference once.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import warnings
from collections import Counter

from musilingo_cli.pipelines.evaluate.cider import CiderD, cider_form, reference_ngrams
from musilingo_cli.pipelines.evaluate.metric_kernels import (  # noqa: F401  (lcs_length, char_bleu: public here too)
    _CharGrams,
    _MemoStemmer,
    _Stems,
    _word_tokenize,
    _WordNet,
    char_bleu,
    lcs_length,
    rouge_l,
    synonym_names,
)
from musilingo_cli.pipelines.evaluate.nltk_data import wordnet_reader

MIN_PARALLEL = 64  # fewer item pairs than this are scored in-process (a pool costs more than it saves)

# Library imports stay inside functions: `musilingo --help` must not import nltk or sacrebleu.
# Set in the parent before a pool forks; read by the workers (nothing large is pickled to them).
_JOB: dict = {}


def _tokenizers(profile: str):
    from rouge_score import rouge_scorer

    if profile == "standard":
        meteor_tok = _word_tokenize()
    else:
        from nltk.tokenize import wordpunct_tokenize as meteor_tok
    from rouge_score import tokenize as rouge_tokenize

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=profile != "standard")
    # what scorer._tokenizer.tokenize does (rouge_score.tokenizers.DefaultTokenizer), with its own Porter
    # stemmer memoised per word (the same words recur in thousands of captions)
    stemmer = scorer._tokenizer._stemmer
    memo = _MemoStemmer(stemmer) if stemmer is not None else None
    return meteor_tok, lambda text: rouge_tokenize.tokenize(text, memo)


def _tokenize_range(bounds: tuple[int, int]) -> tuple[list[tuple], Counter | None]:
    """(METEOR tokens, ROUGE tokens[, CIDEr-D text for the standard profile]) of strings[start:stop], and
    (standard) CIDEr-D's document-frequency counts of the references among them (cider.CiderD.from_counts)."""
    meteor_tok, rouge_tok = _tokenizers(_JOB["profile"])
    texts = _JOB["items"][bounds[0] : bounds[1]]
    if _JOB["profile"] != "standard":
        return [(meteor_tok(text), rouge_tok(text)) for text in texts], None
    # CIDEr-D's text lower-cases the METEOR tokens (cider.cider_text: tokenise, then lower-case)
    rows = [(tokens, rouge_tok(text), cider_form(tokens)) for text in texts for tokens in (meteor_tok(text),)]
    counts: Counter = Counter()
    copies = _JOB["reference_copies"]  # a reference string may stand for several items
    for text, row in zip(texts, rows):
        if text in copies:
            counts.update(dict.fromkeys(reference_ngrams(row[2]), copies[text]))
    return rows, counts


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
    """METEOR, ROUGE-L and CIDEr-D (standard) or character BLEU (musilingo-paper) of pairs[start:stop]."""
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
            (p_meteor, p_rouge, *p_cider), (r_meteor, r_rouge, *r_cider) = tokens[prediction], tokens[reference]
            wordnet.for_reference(stem_sets[reference])
            meteor = float(meteor_score([r_meteor], p_meteor, stemmer=stemmer, wordnet=wordnet))
            rouge = rouge_l(r_rouge, p_rouge, part)
            if profile == "standard":
                out.append((meteor, rouge, _JOB["cider"].item(p_cider[0], r_cider)))
            else:
                out.append((meteor, rouge, *char_bleu(reference, prediction, grams)))
    return out


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


def _warm(profile: str) -> None:
    """Import the metric libraries and load punkt in the parent, so that every forked worker of every
    pool inherits them instead of importing and loading them again."""
    import nltk.translate.meteor_score  # noqa: F401
    import rouge_score.rouge_scorer  # noqa: F401
    import sacrebleu.metrics  # noqa: F401
    from nltk.stem.porter import PorterStemmer  # noqa: F401

    if profile == "standard":
        _word_tokenize()("Warm up.")  # loads punkt_tab once


def _per_pair(
    rows: list[list[str]], references: list[str], profile: str, workers: int | None
) -> tuple[list[tuple], list[list[float]] | None]:
    """Per-pair values for every (row item, reference), rows one after another, and BLEU-1..4 per
    row (standard profile). Tokenising and BLEU run in workers while the parent loads WordNet."""
    workers = default_workers() if workers is None else workers
    _warm(profile)
    try:
        _JOB.clear()
        _JOB.update(profile=profile, rows=rows, references=references)
        strings = list(dict.fromkeys([*references, *(p for row in rows for p in row)]))
        _JOB["items"] = strings
        _JOB["reference_copies"] = Counter(references)
        standard = profile == "standard"
        if _parallel(workers, len(strings)):
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pending = pool.map_async(_tokenize_range, _bounds(len(strings), workers * 4))
                stats = pool.map_async(_bleu_range, _bounds(len(references), workers * 2)) if standard else None
                wordnet_reader()  # loaded here meanwhile; later forks share it
                chunks = pending.get()
                bleu_parts = stats.get() if standard else None
        else:
            chunks = [_tokenize_range((0, len(strings)))]
            bleu_parts = [_bleu_range((0, len(references)))] if standard else None
            wordnet_reader()
        tokens = dict(zip(strings, [row for rows, _ in chunks for row in rows]))
        cider = None
        if standard:  # CIDEr-D's document frequencies: from the references, once for every row
            frequencies: Counter = Counter()
            for _, counts in chunks:
                frequencies.update(counts)
            cider = CiderD.from_counts(frequencies, len(references))
        words = sorted({w.lower() for meteor_tokens, *_ in tokens.values() for w in meteor_tokens})
        stems = dict(zip(words, _map(_stems_range, words, 1)))
        # METEOR's WordNet step looks up the stems of the hypothesis words (the stem step's leftovers)
        hyp_stems = sorted({stems[w.lower()] for row in rows for p in row for w in tokens[p][0]})
        looked_up = _map(_synonyms_range, hyp_stems, workers)
        synonyms = {word: names for word, names in zip(hyp_stems, looked_up) if names is not None}
        # item by item, every row's pair together: a worker then prepares each reference once for all rows
        pairs = [(row[i], reference) for i, reference in enumerate(references) for row in rows]
        values = _map(_pairs_range, pairs, workers, tokens=tokens, stems=stems, synonyms=synonyms, cider=cider)
        by_row = [value for index in range(len(rows)) for value in values[index :: len(rows)]]
        return by_row, (_bleu_from_stats(bleu_parts) if standard and references else None)
    finally:
        _JOB.clear()


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def text_scores(
    rows: list[list[str]], references: list[str], profile: str, workers: int | None = None
) -> list[tuple[dict[str, float | None], list[dict[str, float]]]]:
    """The profile's text metrics (no BERTScore) for each row of predictions against `references`.

    rows: lists of predictions, each aligned with `references` (e.g. [model answers, floor answers]).
    Returns per row (corpus scores keyed like metrics.METRIC_KEYS, per-item score dicts; CIDEr-D
    in the standard profile, as cider.cider_d computes it with one reference per item). BLEU keys
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
            per_item = [{"meteor": m, "rouge_l": r, "cider_d": c} for m, r, c in chunk]
            scores["cider_d"] = CiderD.corpus([item["cider_d"] for item in per_item]) if per_item else None
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
