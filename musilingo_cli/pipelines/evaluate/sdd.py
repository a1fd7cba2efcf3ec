"""`--split sdd`: the Song Describer Dataset (Manco et al. 2023, github mulab-mir/song-describer-dataset),
scored against **all** captions of each track.

`song_describer.csv` has one row per caption (`caption_id`, `track_id`, `caption`, `is_valid_subset`,
`path`, ...); its audio files are `<path without .mp3>.2min.mp3`. An item is a track; its references are
all its captions. The valid subset (`is_valid_subset` true) is used unless --sdd-all-tracks.

Multi-reference metrics, each as its library defines it (standard profile tokens):
- BLEU-1..4: sacrebleu corpus BLEU (13a, no smoothing) with one reference stream per caption position
  (None where a track has fewer captions: sacrebleu's variable-reference form).
- METEOR: NLTK `meteor_score(references, hypothesis)` with all captions, on `word_tokenize` tokens
  (NLTK takes the best-scoring reference).
- ROUGE-L: rouge_score `RougeScorer.score_multi` (the reference with the highest F1), no stemmer.
- CIDEr-D: pycocoevalcap's Cider over all captions (cider.py).
BERTScore is not computed for SDD (bert_score's multi-reference mode is not wired in): a note says so.
The floor answers each track with the first caption of another track (pairing.floor_references).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.core.files import read_csv_rows
from musilingo_cli.pipelines.evaluate import metrics
from musilingo_cli.pipelines.evaluate.answering import answer_items
from musilingo_cli.pipelines.evaluate.cider import cider_d
from musilingo_cli.pipelines.evaluate.config import EvalConfig, EvalItem, EvalReport, SystemResult
from musilingo_cli.pipelines.evaluate.judge_score import judge_scores
from musilingo_cli.pipelines.evaluate.pairing import floor_references, pair
from musilingo_cli.pipelines.evaluate.readers import read_predictions

SPLIT = "sdd"
QUESTION = "Please give a caption to the music."  # the MusicCaps captioning instruction (SDD publishes none)
REQUIRED = ("track_id", "caption")


@dataclass
class SddTrack:
    """One SDD track: its id (track_id), audio file name and every caption (the references)."""

    id: str
    audio: str
    captions: list[str]


def _true(value: str | None) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _audio(row: dict[str, str]) -> str:
    path = (row.get("path") or "").strip()
    if not path:
        return f"{row['track_id'].strip()}.2min.mp3"
    return path if ".2min." in path else str(Path(path).with_suffix("")) + ".2min.mp3"


def read_sdd(path: Path, all_tracks: bool = False) -> list[SddTrack]:
    """The tracks of `song_describer.csv` (valid subset unless `all_tracks`), captions grouped by track_id
    in file order.

    Raises DataError for a missing file or column, an empty caption, or no track in the subset."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass --data song_describer.csv")
    columns, rows = read_csv_rows(path)
    missing = [c for c in REQUIRED + (() if all_tracks else ("is_valid_subset",)) if c not in columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; is it the SDD song_describer.csv?")
    tracks: dict[str, SddTrack] = {}
    for line, row in rows:
        if not all_tracks and not _true(row.get("is_valid_subset")):
            continue
        track_id, caption = row["track_id"].strip(), (row["caption"] or "").strip()
        if not caption:
            raise DataError(f"{path} line {line}: empty caption for track {track_id}; fix or drop that row")
        tracks.setdefault(track_id, SddTrack(track_id, _audio(row), [])).captions.append(caption)
    if not tracks:
        raise DataError(f"{path} has no valid-subset tracks; pass --sdd-all-tracks to score every track")
    return list(tracks.values())


def score_multi(answers: list[str], captions: list[list[str]]) -> tuple[dict[str, float | None], list[dict]]:
    """BLEU-1..4 (corpus), METEOR, ROUGE-L F1 and CIDEr-D of `answers` against each item's captions.

    answers: n strings; captions: n non-empty lists. Returns (scores keyed like metrics.METRIC_KEYS with
    BERTScore None, per-item {meteor, rouge_l, cider_d}). Values in [0, 1] except CIDEr-D in [0, 10]."""
    from nltk import word_tokenize
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    from musilingo_cli.pipelines.evaluate.nltk_data import ensure_punkt, wordnet_reader

    scores: dict[str, float | None] = dict.fromkeys(metrics.METRIC_KEYS)
    if not answers:
        return scores, []
    depth = max(len(c) for c in captions)
    streams = [[c[k] if k < len(c) else None for c in captions] for k in range(depth)]
    bleus = [
        BLEU(max_ngram_order=n, smooth_method="none", tokenize="13a").corpus_score(answers, streams).score / 100.0
        for n in (1, 2, 3, 4)
    ]
    for n, value in enumerate(bleus, start=1):
        scores[f"bleu{n}"] = value
    scores["bleu_mean"] = math.fsum(bleus) / 4
    ensure_punkt()
    wordnet = wordnet_reader()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    per_item = [
        {
            "meteor": float(meteor_score([word_tokenize(r) for r in refs], word_tokenize(a), wordnet=wordnet)),
            "rouge_l": float(scorer.score_multi(refs, a)["rougeL"].fmeasure),
        }
        for a, refs in zip(answers, captions)
    ]
    corpus_cider, item_cider = cider_d(answers, captions)
    for item, value in zip(per_item, item_cider):
        item["cider_d"] = value
    scores["cider_d"] = corpus_cider
    for key in ("meteor", "rouge_l"):
        scores[key] = math.fsum(item[key] for item in per_item) / len(per_item)
    return scores, per_item


def run_sdd(config: EvalConfig, answers_split: bool) -> EvalReport:
    """Score answer files (ids = track_id, or audio file and question) against every caption of each track."""
    if config.profile != "standard":
        raise ConfigError("--split sdd is scored under the standard profile only; drop --profile")
    source = config.data or config.references
    if source is None:
        raise ConfigError("--split sdd needs --data song_describer.csv (the Song Describer Dataset's caption file)")
    tracks = read_sdd(source, config.sdd_all_tracks)
    by_id = {t.id: t for t in tracks}
    items = [EvalItem(t.id, t.audio, QUESTION, t.captions[0]) for t in tracks]
    predictions = list(config.predictions)
    if answers_split:
        predictions.append(answer_items(items, config))
    systems = [_score_file(Path(p), items, by_id, config) for p in predictions]
    sources = {"sdd": f"{source} ({'all tracks' if config.sdd_all_tracks else 'valid subset'})"}
    return EvalReport("standard", systems, metrics.library_versions(), sources, config.seed)


def _score_file(path: Path, items: list[EvalItem], by_id: dict[str, SddTrack], config: EvalConfig) -> SystemResult:
    preds = read_predictions(path, config.prediction_field, config.reference_field)
    ignored = 0
    if all(p.id for p in preds) and any(p.id in by_id for p in preds):  # answers to other tracks: ignored
        kept = [p for p in preds if p.id in by_id]
        preds, ignored = kept, len(preds) - len(kept)
    preds, paired, unanswered = pair(preds, items, str(path))
    captions = [by_id[r.id].captions for r in paired]
    answers = [p.answer for p in preds]
    scores, per_item = score_multi(answers, captions)
    floor, floor_answers = None, None
    if config.floor and len(preds) > 1:
        floor_answers, _ = floor_references([""] * len(paired), [c[0] for c in captions], config.seed)
        floor = score_multi(floor_answers, captions)[0]
    counts = {
        "n": len(preds),
        "empty": sum(1 for p in preds if not p.failed and not p.answer.strip()),
        "failed": sum(1 for p in preds if p.failed),
        "unanswered": unanswered,
        "floor_fallback": 0,
    }
    notes = [
        f"SDD: each answer scored against all {sum(map(len, captions))} captions of its {len(captions)} tracks",
        "BERTScore not computed for SDD (multi-reference)",
    ]
    if counts["failed"]:
        notes.append(f"{counts['failed']} answers failed in ask and are scored as empty answers")
    if unanswered:
        notes.append(f"{unanswered} tracks have no answer in this file and are not scored")
    if ignored:
        notes.append(f"{ignored} answers are for tracks outside the scored subset and are ignored")
    signatures = {
        "bleu": metrics.sacrebleu_signature().replace("nrefs:1", "nrefs:var"),
        "cider_d": "pycocoevalcap Cider (CIDEr-D, sigma 6, n 1-4, x10), word_tokenize lower-cased",
        "rouge_l": "rouge_score score_multi (max F1 over captions), no stemmer",
    }
    judge = None
    if config.judge_model:  # against every caption of the track, beside the metrics
        questions = [QUESTION] * len(answers)
        judge, values = judge_scores(questions, captions, answers, config.judge_model, config.judge_base_url)
        for item, value in zip(per_item, values):
            item["judge_score"] = value
    per_item_path = _write_per_item(path, preds, captions, per_item, floor_answers, config)
    return SystemResult(
        path.stem,
        str(path),
        scores,
        floor,
        counts,
        metrics.descriptive_stats(answers),
        notes,
        signatures,
        per_item_path,
        judge,
    )


def _write_per_item(path: Path, preds, captions, per_item, floor_answers, config: EvalConfig) -> str | None:
    if not config.write_per_item:
        return None
    target = config.per_item or path.with_name(path.stem + ".scores.jsonl")
    lines = []
    for index, (p, refs, values) in enumerate(zip(preds, captions, per_item)):
        status = "failed" if p.failed else ("empty" if not p.answer.strip() else "ok")
        row = {"id": p.id, "audio": p.audio, "answer": p.answer, "references": refs, "status": status, **values}
        if floor_answers is not None:
            row["floor_answer"] = floor_answers[index]
        lines.append(json.dumps(row, ensure_ascii=False))
    try:
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as err:
        from musilingo_cli.core.console import warn

        warn(f"per-item scores not written to {target} ({err.strerror}); pass --per-item FILE")
        return None
    return str(target)
