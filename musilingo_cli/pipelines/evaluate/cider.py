"""CIDEr-D (Vedantam et al. 2015, arXiv:1411.5726) from pycocoevalcap, the COCO caption evaluation code.

pycocoevalcap's `Cider` is CIDEr-D as its authors define it: TF-IDF n-gram vectors (n = 1..4, document
frequencies from the references of the scored corpus), clipped hypothesis counts, a Gaussian length
penalty (sigma 6), averaged over the references and scaled by 10. Its value is in [0, 10], not [0, 1].

Tokens: pycocoevalcap's PTBTokenizer runs Stanford CoreNLP (Java) with `-lowerCase`, which lower-cases
each token after tokenising the text as written. Instead the texts are tokenised the way the standard
profile tokenises METEOR's input (NLTK `word_tokenize` on the text as written), each token is
lower-cased, and the punctuation tokens PTBTokenizer drops (its PUNCTUATIONS list) are dropped, then
joined with spaces, which is the form `Cider.compute_score` expects.

`CiderD` is the same arithmetic for several rows of predictions against the same references (the
model's answers and the floor), with what is pure computed once: document frequencies, each distinct
text's n-gram counts and TF-IDF vector, each n-gram's IDF and each length penalty.
tests/test_metric_engine.py checks it against `cider_d` float for float.
"""

from __future__ import annotations

import math
from collections import Counter

from musilingo_cli.pipelines.evaluate.metric_kernels import _word_tokenize

# pycocoevalcap/tokenizer/ptbtokenizer.py PUNCTUATIONS (brackets as word_tokenize leaves them)
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "(", ")", "{", "}", "[", "]", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


def cider_text(text: str, tokenize) -> str:
    """`text` in PTBTokenizer's output form: `tokenize(text)`, then cider_form."""
    return cider_form(tokenize(text))


def cider_form(tokens: list[str]) -> str:
    """Tokens lower-cased one by one (PTBTokenizer's -lowerCase), punctuation tokens dropped, space-joined."""
    return " ".join(t.lower() for t in tokens if t not in PUNCTUATIONS)


def cider_d(predictions: list[str], references: list[list[str]]) -> tuple[float | None, list[float]]:
    """Corpus CIDEr-D and per-item values of `predictions` against each item's list of references.

    predictions: n strings; references: n non-empty lists of strings (several captions per item allowed).
    Returns (mean over items in [0, 10], or None for no items; the n item values).
    Raises ValueError when the lengths differ or an item has no reference.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        return None, []
    if any(not refs for refs in references):
        raise ValueError("every item needs at least one reference for CIDEr-D")
    from pycocoevalcap.cider.cider import Cider  # lazy: numpy stays out of `musilingo --help`

    tokenize = _word_tokenize()
    memo: dict[str, str] = {}

    def tok(text: str) -> str:
        if text not in memo:
            memo[text] = cider_text(text, tokenize)
        return memo[text]

    gts = {i: [tok(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [tok(p)] for i, p in enumerate(predictions)}
    score, scores = Cider().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


def reference_ngrams(text: str, n: int = 4) -> set[tuple]:
    """The distinct n-grams (orders 1..n) of one text in cider_text form: pycocoevalcap's `precook` keys."""
    from pycocoevalcap.cider.cider_scorer import precook  # lazy: numpy stays out of `musilingo --help`

    return set(precook(text, n))


class CiderD:
    """pycocoevalcap `CiderScorer` (n 4, sigma 6) against fixed references, scored item by item.

    references: per item, its references in `cider_text` form. Each step is CiderScorer's own
    arithmetic on the same numpy scalar types in the same order (compute_doc_freq, counts2vec, sim,
    compute_cider), so values equal `Cider().compute_score` float for float; what is memoised is
    pure (a function of its text, of a document frequency, or of a length difference). Reading a
    missing n-gram gives 0.0 as CiderScorer's defaultdict does, without inserting it.
    """

    def __init__(self, references: list[list[str]], n: int = 4, sigma: float = 6.0) -> None:
        self._start(n, sigma)
        counts: Counter = Counter()
        for refs in references:  # compute_doc_freq: each item counts an n-gram once
            counts.update({ngram for ref in refs for ngram in self._cook(ref)})  # memoised for _vector
        self._frequencies(counts, len(references))

    @classmethod
    def from_counts(cls, counts: dict[tuple, int], items: int, n: int = 4, sigma: float = 6.0) -> CiderD:
        """The scorer for `items` items whose document frequencies were counted elsewhere (e.g. in
        parts by several workers): counts[ngram] = how many items' references contain it. Equal to
        `CiderD(references)` when counted from the same references (the frequencies are integers)."""
        scorer = cls.__new__(cls)
        scorer._start(n, sigma)
        scorer._frequencies(counts, items)
        return scorer

    def _start(self, n: int, sigma: float) -> None:
        import numpy as np  # lazy: numpy stays out of `musilingo --help`

        self._np, self.n, self.sigma = np, n, sigma
        self._counts: dict[str, dict] = {}
        self._vectors: dict[str, tuple] = {}
        self._logs: dict[float, object] = {}
        self._idfs: dict[tuple, float] = {}
        self._penalties: dict[float, float] = {}

    def _frequencies(self, counts: dict[tuple, int], items: int) -> None:
        # CiderScorer adds 1.0 per item to a float: integer counts as floats are the same values
        self.document_frequency: dict[tuple, float] = {ngram: float(count) for ngram, count in counts.items()}
        self.ref_len = self._np.log(float(items))

    def _cook(self, text: str) -> dict:
        found = self._counts.get(text)
        if found is None:
            from pycocoevalcap.cider.cider_scorer import precook

            found = self._counts[text] = precook(text, self.n)
        return found

    def _idf(self, ngram: tuple) -> float:
        """`self.ref_len - np.log(max(1.0, document_frequency[ngram]))`, as counts2vec computes it (the
        float64 result as a Python float: the products and sums below are then the same IEEE double
        operations as numpy's scalar ones, without numpy's per-scalar cost)."""
        found = self._idfs.get(ngram)
        if found is None:
            frequency = max(1.0, self.document_frequency.get(ngram, 0.0))
            log_df = self._logs.get(frequency)
            if log_df is None:
                log_df = self._logs[frequency] = self._np.log(frequency)
            found = self._idfs[ngram] = float(self.ref_len - log_df)
        return found

    def _vector(self, text: str) -> tuple:
        """counts2vec(precook(text)): (vec, norm, length)."""
        found = self._vectors.get(text)
        if found is not None:
            return found
        vec: list[dict] = [{} for _ in range(self.n)]
        length = 0
        norm = [0.0 for _ in range(self.n)]
        idfs = self._idfs
        for ngram, term_freq in self._cook(text).items():
            k = len(ngram) - 1
            idf = idfs.get(ngram)
            value = vec[k][ngram] = float(term_freq) * (idf if idf is not None else self._idf(ngram))
            norm[k] += pow(value, 2)
            if k == 1:  # CiderScorer's `length` counts bigrams (its `n == 1` test on the 0-based order)
                length += term_freq
        found = self._vectors[text] = (vec, [math.sqrt(x) for x in norm], length)  # sqrt: correctly rounded
        return found

    def _penalty(self, delta: float) -> float:
        found = self._penalties.get(delta)
        if found is None:
            found = self._penalties[delta] = self._np.e ** (-(delta**2) / (2 * self.sigma**2))
        return found

    def _sim(self, hyp: tuple, ref: tuple) -> list[float]:
        """CiderScorer.sim's four values, accumulated in the same order as its float64 array."""
        (vec_hyp, norm_hyp, length_hyp), (vec_ref, norm_ref, length_ref) = hyp, ref
        penalty = self._penalty(float(length_hyp - length_ref))
        val = [0.0] * self.n
        for k in range(self.n):
            other = vec_ref[k]
            total = 0.0
            for ngram, value in vec_hyp[k].items():
                theirs = other.get(ngram, 0.0)
                total += min(value, theirs) * theirs
            if (norm_hyp[k] != 0) and (norm_ref[k] != 0):
                total /= norm_hyp[k] * norm_ref[k]
            val[k] = total * penalty
        return val

    def item(self, prediction: str, refs: list[str]) -> float:
        """CIDEr-D of `prediction` against one item's `refs` (all in cider_text form), in [0, 10]."""
        hyp = self._vector(prediction)
        score = [0.0] * self.n
        for ref in refs:
            score = [a + b for a, b in zip(score, self._sim(hyp, self._vector(ref)))]
        score_avg = self._np.mean(self._np.array(score))  # numpy's summation order, as compute_cider
        score_avg /= len(refs)
        score_avg *= 10.0
        return float(score_avg)

    @staticmethod
    def corpus(values: list[float]) -> float:
        """The corpus value of item values, as `Cider.compute_score` takes it (numpy mean)."""
        import numpy as np

        return float(np.mean(np.array(values)))
