"""Tokens for texts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer,
Myanmar), for the metrics in metrics.py whose tokenizers assume space-separated Latin words.

Without this, identical Chinese answers score ROUGE-L 0 (rouge-score's tokenizer keeps only
[a-z0-9]) and BLEU-2..4 0 (13a sees one "word" per sentence). The rule, the one sacrebleu's `zh`
tokenizer applies to Chinese (and WMT's character-level scoring of these languages): every
character of such a script is one token; text in other scripts is tokenised as before, so scores
of English items do not change.

- BLEU (sacrebleu): a corpus with Han but no kana or Southeast Asian script uses sacrebleu's own
  `tokenize="zh"`; one with kana or Thai-family letters (which `zh` leaves joined) gets those
  characters spaced out before sacrebleu's `13a`; other corpora keep `13a`.
- ROUGE-L (rouge-score): `RougeTokenizer`, passed as rouge-score's `tokenizer=`.
- METEOR (NLTK): `spaced(text)` before `word_tokenize` / `wordpunct_tokenize`.
"""

from __future__ import annotations

import re

# Unicode blocks of scripts written without spaces between words.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_SOUTHEAST = "\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f"  # Thai, Lao, Khmer, Myanmar
_CJK_PUNCT = "\u3000-\u303f\uff01-\uff0f\uff1a-\uff20"
_UNSPACED = re.compile(f"[{_HAN}{_KANA}{_SOUTHEAST}]")
_CHAR_TOKEN = re.compile(f"[{_HAN}{_KANA}{_SOUTHEAST}{_CJK_PUNCT}]")
_NOT_HAN = re.compile(f"[{_KANA}{_SOUTHEAST}]")
_SCRIPTS = (("Chinese/Japanese kanji", _HAN), ("Japanese kana", _KANA), ("Thai/Lao/Khmer/Myanmar", _SOUTHEAST))


def unspaced(text: str) -> bool:
    """True when `text` holds letters of a script written without spaces between words."""
    return _UNSPACED.search(text) is not None


def spaced(text: str) -> str:
    """`text` with a space around every character of those scripts (and CJK punctuation); other
    text unchanged. "我喜欢 jazz。" -> " 我  喜  欢  jazz 。 " (tokenizers collapse the spaces)."""
    if not unspaced(text):
        return text
    return _CHAR_TOKEN.sub(lambda m: f" {m.group(0)} ", text)


def bleu_setup(predictions: list[str], references: list[str]) -> tuple[str, list[str], list[str], str]:
    """(sacrebleu tokenize name, predictions, references, signature suffix) for a corpus BLEU.

    `13a` unchanged without unspaced scripts; sacrebleu's own `zh` when the only one is Han;
    otherwise the texts spaced per character and `13a` (sacrebleu has no Japanese tokenizer
    without MeCab, and none for Thai)."""
    texts = predictions + references
    if not any(unspaced(t) for t in texts):
        return "13a", predictions, references, ""
    if not any(_NOT_HAN.search(t) for t in texts):
        return "zh", predictions, references, ""
    suffix = " + one token per CJK/kana/Thai-family character (musilingo scripts.spaced)"
    return "13a", [spaced(t) for t in predictions], [spaced(t) for t in references], suffix


class RougeTokenizer:
    """rouge-score's default tokenizer (lower-case, [a-z0-9] words, optional Porter stemmer) for
    Latin text, with one token per character of an unspaced script (rouge-score's own drops them)."""

    def __init__(self, use_stemmer: bool = False):
        from rouge_score import tokenizers

        self._default = tokenizers.DefaultTokenizer(use_stemmer=use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        """Tokens of `text`, in order."""
        if not unspaced(text):
            return self._default.tokenize(text)
        tokens: list[str] = []
        start = 0
        for match in _UNSPACED.finditer(text):
            tokens += self._default.tokenize(text[start : match.start()])
            tokens.append(match.group(0))
            start = match.end()
        return tokens + self._default.tokenize(text[start:])


def script_notes(predictions: list[str], references: list[str]) -> list[str]:
    """One note naming the items (1-based) tokenised per character, and their scripts; [] if none."""
    items = [i for i, (p, r) in enumerate(zip(predictions, references), start=1) if unspaced(p) or unspaced(r)]
    if not items:
        return []
    texts = " ".join(predictions[i - 1] + references[i - 1] for i in items)
    names = [name for name, block in _SCRIPTS if re.search(f"[{block}]", texts)]
    shown = ", ".join(map(str, items[:20])) + (f" and {len(items) - 20} more" if len(items) > 20 else "")
    note = (
        f"{len(items)} item(s) in scripts without spaces between words ({', '.join(names)}): "
        f"BLEU, METEOR and ROUGE-L count one token per character of those scripts (items {shown})"
    )
    return [note]
