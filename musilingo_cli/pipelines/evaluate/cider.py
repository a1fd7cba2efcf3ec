"""CIDEr-D (Vedantam et al. 2015, arXiv:1411.5726) from pycocoevalcap, the COCO caption evaluation code.

pycocoevalcap's `Cider` is CIDEr-D as its authors define it: TF-IDF n-gram vectors (n = 1..4, document
frequencies from the references of the scored corpus), clipped hypothesis counts, a Gaussian length
penalty (sigma 6), averaged over the references and scaled by 10. Its value is in [0, 10], not [0, 1].

Tokens: pycocoevalcap's PTBTokenizer runs Stanford CoreNLP (Java). Instead the texts are tokenised the
way the standard profile tokenises METEOR's input (NLTK `word_tokenize`), lower-cased, and the
punctuation tokens PTBTokenizer drops (its PUNCTUATIONS list) are dropped, then joined with spaces,
which is the form `Cider.compute_score` expects.
"""

from __future__ import annotations

from musilingo_cli.pipelines.evaluate.metric_engine import _word_tokenize

# pycocoevalcap/tokenizer/ptbtokenizer.py PUNCTUATIONS (brackets as word_tokenize leaves them)
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "(", ")", "{", "}", "[", "]", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


def cider_text(text: str, tokenize) -> str:
    """`text` as space-joined lower-cased tokens without punctuation tokens (PTBTokenizer's output form)."""
    return " ".join(t for t in tokenize(text.lower()) if t not in PUNCTUATIONS)


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
