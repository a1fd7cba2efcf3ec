"""Text metrics for `musilingo eval` under two named profiles (exact definitions:
`reference/metrics.md` §3, summarised in docs/eval.md). Pure functions over lists of strings.

- `standard`: corpus BLEU-1..4 (sacrebleu, 13a tokens, no smoothing) and their arithmetic mean,
  NLTK METEOR on `word_tokenize`, ROUGE-L F1 (no stemmer, plain mean), BERTScore P/R/F1.
  Comparable with LP-MusicCaps and most of the field.
- `musilingo-paper`: what MusiLingo's `qa.py` (= MU-LLaMA's evaluate.py) computes: `sentence_bleu`
  on raw strings, i.e. character n-grams (B-U, plus its "BLEU-4" individual char 4-gram score),
  METEOR on `wordpunct_tokenize`, ROUGE-L *recall* with the stemmer, BERTScore *recall* as BERT-S.

Every score is a raw fraction in [0, 1]; missing ones are None.
"""

from __future__ import annotations

import math
import statistics
import string
import warnings
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from musilingo_cli.pipelines.evaluate import metric_engine, scripts
from musilingo_cli.pipelines.evaluate.cider import cider_d

PROFILES = ("standard", "musilingo-paper")
METRIC_KEYS = (
    "bleu1",
    "bleu2",
    "bleu3",
    "bleu4",
    "bleu_mean",
    "meteor",
    "rouge_l",
    "bertscore_precision",
    "bertscore_recall",
    "bertscore_f1",
    "cider_d",
)

# Row labels per profile: the metric's name says which definition produced it.
LABELS = {
    "standard": {
        "bleu1": "BLEU-1 (corpus, 13a)",
        "bleu2": "BLEU-2 (corpus, 13a)",
        "bleu3": "BLEU-3 (corpus, 13a)",
        "bleu4": "BLEU-4 (corpus, 13a)",
        "bleu_mean": "mean(BLEU-1..4)",
        "meteor": "METEOR (NLTK, word_tokenize)",
        "rouge_l": "ROUGE-L F1 (no stem)",
        "bertscore_precision": "BERTScore P",
        "bertscore_recall": "BERTScore R",
        "bertscore_f1": "BERTScore F1",
        "cider_d": "CIDEr-D (pycocoevalcap, 0-10)",
    },
    "musilingo-paper": {
        "bleu1": "BLEU-1 (not in qa.py)",
        "bleu2": "BLEU-2 (not in qa.py)",
        "bleu3": "BLEU-3 (not in qa.py)",
        "bleu4": "BLEU-4 (qa.py: char 4-gram only)",
        "bleu_mean": "B-U (qa.py: char sentence BLEU)",
        "meteor": "M-R (METEOR, wordpunct)",
        "rouge_l": "R-L (ROUGE-L recall, stem)",
        "bertscore_precision": "BERTScore P",
        "bertscore_recall": "BERT-S (BERTScore recall)",
        "bertscore_f1": "BERTScore F1",
        "cider_d": "CIDEr-D (not in qa.py)",
    },
}
DESCRIPTIONS = {
    "standard": "standard: corpus BLEU (sacrebleu 13a, no smoothing), METEOR on word_tokenize, "
    "ROUGE-L F1 without stemmer, BERTScore F1; comparable with LP-MusicCaps",
    "musilingo-paper": "musilingo-paper: replicates MusiLingo's qa.py (character-level sentence BLEU, "
    "METEOR on wordpunct, ROUGE-L recall with stemmer, BERTScore recall); "
    "comparable only with numbers computed by that code",
}


@dataclass
class BertScoreSpec:
    """Which encoder BERTScore uses: roberta-large layer 17 (bert_score's English default) or a local model."""

    model: str = "roberta-large"
    num_layers: int | None = None  # None: 17 for roberta-large, required for anything else
    batch_size: int = 64
    device: str | None = None

    def layers(self) -> int:
        """The layer to read; roberta-large's default is bert_score's own (17)."""
        if self.num_layers is not None:
            return self.num_layers
        if self.model == "roberta-large":
            return 17
        from musilingo_cli.core.errors import ConfigError

        raise ConfigError(f"--bertscore-model {self.model} needs --bertscore-layers N (which hidden layer to use)")


@dataclass
class MetricResult:
    """Corpus scores (METRIC_KEYS, None where not computed), per-item scores and notes."""

    scores: dict[str, float | None]
    per_item: list[dict[str, float]]
    notes: list[str] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)


class BertScoreUnavailable(Exception):
    """The BERTScore model cannot be loaded; the message says why (shown as `skipped: ...`)."""


# ---------------------------------------------------------------- BLEU


def corpus_bleu(predictions: list[str], references: list[str], order: int) -> float:
    """Corpus BLEU-n as LP-MusicCaps/HF evaluate compute it: sacrebleu, 13a, case-sensitive, no smoothing."""
    from sacrebleu.metrics import BLEU

    tokenize, predictions, references, _ = scripts.bleu_setup(predictions, references)  # zh, ja, th: scripts.py
    bleu = BLEU(max_ngram_order=order, smooth_method="none", tokenize=tokenize)
    return bleu.corpus_score(predictions, [references]).score / 100.0


def sacrebleu_signature(tokenize: str = "13a") -> str:
    """sacrebleu's signature string for the standard profile's BLEU-4."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(max_ngram_order=4, smooth_method="none", tokenize=tokenize)
    bleu.corpus_score(["a"], [["a"]])  # sacrebleu only knows nrefs after scoring something
    return str(bleu.get_signature())


def char_sentence_bleu(reference: str, prediction: str, weights=(0.25, 0.25, 0.25, 0.25)) -> float:
    """qa.py's `sentence_bleu([ref], cand)` on raw strings: character n-grams, no smoothing."""
    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on every zero n-gram overlap
        return float(sentence_bleu([reference], prediction, weights=weights))


# ---------------------------------------------------------------- METEOR, ROUGE-L


def meteor_scores(predictions: list[str], references: list[str], tokenizer: str) -> list[float]:
    """NLTK METEOR per item (alpha 0.9, beta 3, gamma 0.5, WordNet) on `word_tokenize` or `wordpunct` tokens.

    The plain loop, kept as the reference the fast path (metric_engine) is tested against."""
    from nltk.translate.meteor_score import meteor_score

    from musilingo_cli.pipelines.evaluate.nltk_data import ensure_punkt, wordnet_reader

    wordnet = wordnet_reader()
    if tokenizer == "word_tokenize":
        ensure_punkt()
        from nltk import word_tokenize as tokenize
    else:
        from nltk.tokenize import wordpunct_tokenize as tokenize
    spaced = scripts.spaced  # one token per character of scripts written without spaces
    return [
        float(meteor_score([tokenize(spaced(r))], tokenize(spaced(p)), wordnet=wordnet))
        for p, r in zip(predictions, references)
    ]


def rouge_l_scores(predictions: list[str], references: list[str], *, stemmer: bool, part: str) -> list[float]:
    """rouge_score ROUGE-L per item; `part` is "fmeasure" (standard) or "recall" (qa.py)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=scripts.RougeTokenizer(stemmer))
    return [float(getattr(scorer.score(r, p)["rougeL"], part)) for p, r in zip(predictions, references)]


# ---------------------------------------------------------------- BERTScore


def _scorer(spec: BertScoreSpec):  # -> (BERTScorer, whether the prefix-space fix applied)
    """A bert_score.BERTScorer; RoBERTa/GPT-2 tokenizers reloaded with a prefix space.

    bert_score 0.3.13 asks `encode(..., add_prefix_space=True)`; transformers 5 ignores that
    argument, so the first word would be tokenized without its leading space, unlike the
    transformers-4 runs behind every published number. Loading the tokenizer with
    `add_prefix_space=True` restores the transformers-4 token ids.
    """
    import bert_score
    from transformers import AutoTokenizer, GPT2Tokenizer, RobertaTokenizer

    local = Path(spec.model).is_dir()
    if not local and spec.model != "roberta-large":
        raise BertScoreUnavailable(f"{spec.model} is not a local model directory")
    try:
        scorer = bert_score.BERTScorer(
            model_type=spec.model,
            num_layers=spec.layers(),
            idf=False,
            rescale_with_baseline=False,
            batch_size=spec.batch_size,
            device=spec.device,
        )
        fixed = isinstance(scorer._tokenizer, (RobertaTokenizer, GPT2Tokenizer))
        if fixed:
            scorer._tokenizer = AutoTokenizer.from_pretrained(spec.model, use_fast=False, add_prefix_space=True)
    except (OSError, ValueError) as err:
        hint = "" if local else " (not in the Hugging Face cache and no network)"
        raise BertScoreUnavailable(f"{spec.model} cannot be loaded{hint}: {str(err).splitlines()[0][:160]}") from None
    return scorer, fixed


def bertscore(
    predictions: list[str], references: list[str], spec: BertScoreSpec
) -> tuple[list[float], list[float], list[float], str]:
    """BERTScore P, R, F1 per item (no idf, no rescaling) and bert_score's hash.

    Empty candidates score 0, as bert_score itself sets them; they are not sent to the model
    because bert_score's empty-string path calls a tokenizer method transformers 5 removed.
    """
    scorer, prefix_fixed = _scorer(spec)
    keep = [i for i, p in enumerate(predictions) if p.strip()]
    n = len(predictions)
    precision, recall, f1 = [0.0] * n, [0.0] * n, [0.0] * n
    if keep:
        P, R, F = scorer.score([predictions[i] for i in keep], [references[i] for i in keep])
        for j, i in enumerate(keep):
            precision[i], recall[i], f1[i] = float(P[j]), float(R[j]), float(F[j])
    return precision, recall, f1, scorer.hash + ("(prefix-space fix)" if prefix_fixed else "")


# ---------------------------------------------------------------- profiles


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def score(
    predictions: list[str],
    references: list[str],
    profile: str = "standard",
    bert: BertScoreSpec | None = None,
) -> MetricResult:
    """All metrics of `profile` for aligned predictions/references; `bert=None` skips BERTScore."""
    return score_rows([predictions], references, profile, bert)[0]


def score_rows(
    rows: list[list[str]],
    references: list[str],
    profile: str = "standard",
    bert: BertScoreSpec | None = None,
    workers: int | None = None,
) -> list[MetricResult]:
    """`score` for several rows of predictions against the same references (the model's answers and
    the floor) in one pass, on all cores (`workers`); numbers identical to scoring each row alone
    with the plain loop (metric_engine.py says how)."""
    if profile not in PROFILES:
        from musilingo_cli.core.errors import ConfigError

        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if any(scripts.script_notes(row, references) for row in rows):
        # texts in scripts written without spaces: the plain loop, which knows how to cut them
        return [_plain_score(row, references, profile, bert) for row in rows]
    results = []
    for predictions, (text, items) in zip(rows, metric_engine.text_scores(rows, references, profile, workers)):
        scores: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
        scores.update(text)
        result = MetricResult(scores, items)
        if profile == "standard":  # CIDEr-D came with the text metrics (metric_engine, cider.CiderD)
            result.signatures["cider_d"] = CIDER_SIGNATURE
        result.signatures["bleu"] = (
            sacrebleu_signature()
            if profile == "standard"
            else "nltk sentence_bleu on characters, default weights, no smoothing, macro mean"
        )
        _finish(predictions, references, bert, result)
        results.append(result)
    return results


def _plain_score(predictions: list[str], references: list[str], profile: str, bert) -> MetricResult:
    """One row through the plain loop (used for texts in scripts without spaces)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scores: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    per_item: list[dict[str, float]] = [{} for _ in predictions]
    result = MetricResult(scores, per_item, scripts.script_notes(predictions, references))
    if profile == "standard":
        _standard(predictions, references, result)
    else:
        _paper(predictions, references, result)
    _finish(predictions, references, bert, result)
    return result


def _finish(predictions: list[str], references: list[str], bert, result: MetricResult) -> None:
    if bert is None:
        result.notes.append("BERTScore skipped: --no-bertscore")
    else:
        _add_bertscore(predictions, references, bert, result)


def _put(result: MetricResult, key: str, values: list[float]) -> None:
    result.scores[key] = _mean(values)
    for item, value in zip(result.per_item, values):
        item[key] = value


def _standard(predictions: list[str], references: list[str], result: MetricResult) -> None:
    if predictions:
        bleus = [corpus_bleu(predictions, references, n) for n in (1, 2, 3, 4)]
        for n, value in enumerate(bleus, start=1):
            result.scores[f"bleu{n}"] = value
        result.scores["bleu_mean"] = math.fsum(bleus) / 4
    tokenize, _, _, suffix = scripts.bleu_setup(predictions, references)
    result.signatures["bleu"] = sacrebleu_signature(tokenize) + suffix
    _put(result, "meteor", meteor_scores(predictions, references, "word_tokenize"))
    _put(result, "rouge_l", rouge_l_scores(predictions, references, stemmer=False, part="fmeasure"))
    _add_cider(predictions, references, result)


CIDER_SIGNATURE = "pycocoevalcap Cider (CIDEr-D, sigma 6, n 1-4, x10), word_tokenize lower-cased"


def _add_cider(predictions: list[str], references: list[str], result: MetricResult) -> None:
    """CIDEr-D (standard profile): pycocoevalcap's Cider, one reference per item (cider.py)."""
    corpus, values = cider_d(predictions, [[r] for r in references])
    result.scores["cider_d"] = corpus
    for item, value in zip(result.per_item, values):
        item["cider_d"] = value
    result.signatures["cider_d"] = CIDER_SIGNATURE


def _paper(predictions: list[str], references: list[str], result: MetricResult) -> None:
    pairs = list(zip(references, predictions))
    _put(result, "bleu_mean", [char_sentence_bleu(r, p) for r, p in pairs])
    _put(result, "bleu4", [char_sentence_bleu(r, p, (0.0, 0.0, 0.0, 1.0)) for r, p in pairs])
    result.signatures["bleu"] = "nltk sentence_bleu on characters, default weights, no smoothing, macro mean"
    _put(result, "meteor", meteor_scores(predictions, references, "wordpunct"))
    _put(result, "rouge_l", rouge_l_scores(predictions, references, stemmer=True, part="recall"))


def _add_bertscore(predictions: list[str], references: list[str], spec: BertScoreSpec, result: MetricResult) -> None:
    try:
        precision, recall, f1, hash_ = bertscore(predictions, references, spec)
    except BertScoreUnavailable as err:
        result.notes.append(f"BERTScore skipped: {err}")
        return
    _put(result, "bertscore_precision", precision)
    _put(result, "bertscore_recall", recall)
    _put(result, "bertscore_f1", f1)
    result.signatures["bertscore"] = hash_


# ---------------------------------------------------------------- descriptive statistics


def _lp_tokens(text: str) -> list[str]:
    """LP-MusicCaps' vocab_novelty tokens: lower-case, drop ',' and '.', split on whitespace."""
    return text.lower().replace(",", "").replace(".", "").split()


def _diversity_tokens(text: str) -> list[str]:
    """LP-MusicCaps' vocab_diversity tokens: drop all ASCII punctuation, lower-case, split."""
    return text.translate(str.maketrans("", "", string.punctuation)).lower().split()


def descriptive_stats(predictions: list[str], train_captions: list[str] | None = None) -> dict[str, float | int | None]:
    """The statistics LP-MusicCaps reports, with its tokenisation (docs/eval.md gives the formulas).

    vocab_size: distinct words; type_token_ratio: distinct / total words; length_mean/std:
    whitespace words (population std, as numpy). With training captions also vocab_diversity
    (generated vocab / training vocab of words seen at least twice), novel_vocab (share of the
    generated vocab absent from training captions) and novel_captions (share of distinct
    generated captions that are not a training caption verbatim).
    """
    words = [w for p in predictions for w in _lp_tokens(p)]
    vocab = set(words)
    lengths = [len(p.split()) for p in predictions]
    stats: dict[str, float | int | None] = {
        "vocab_size": len(vocab),
        "type_token_ratio": len(vocab) / len(words) if words else None,
        "length_mean": statistics.fmean(lengths) if lengths else None,
        "length_std": statistics.pstdev(lengths) if lengths else None,
        "vocab_diversity": None,
        "novel_vocab": None,
        "novel_captions": None,
    }
    if train_captions is not None:
        train_words = {w for t in train_captions for w in _lp_tokens(t)}
        frequent = Counter(w for t in train_captions for w in _diversity_tokens(t))
        train_vocab = [w for w, c in frequent.items() if c >= 2]
        generated = {w for p in predictions for w in _diversity_tokens(p)}
        stats["vocab_diversity"] = len(generated) / len(train_vocab) if train_vocab else None
        stats["novel_vocab"] = len(vocab - train_words) / len(vocab) if vocab else None
        distinct = set(predictions)
        stats["novel_captions"] = len(distinct - set(train_captions)) / len(distinct) if distinct else None
    return stats


def library_versions() -> dict[str, str]:
    """Installed versions of every library a score depends on (distribution metadata, not __version__)."""
    versions = {}
    for name in ("nltk", "sacrebleu", "rouge-score", "pycocoevalcap", "bert-score", "transformers", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
