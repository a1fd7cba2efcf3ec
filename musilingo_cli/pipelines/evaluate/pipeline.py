"""`musilingo eval`: read answers and references, pair them, score them under one metric
profile, add a shuffled-reference floor and descriptive statistics, write the results.

Item ids (stable for a given annotations file): Music Instruct `{ytid}:{index in the file's QA
list}`, MusicQA `{audio_name}:{index in the list}`, MusicCaps `{ytid}`. Answers are paired with
references by `id` when both sides carry ids, else by (audio file stem, question), else by
position when neither side has keys and the counts agree.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.pipelines.evaluate import metrics
from musilingo_cli.core.errors import ConfigError, DataError

SPLITS = ("mi-short", "mi-long", "musicqa", "musiccaps")
FORMATS = ("table", "markdown", "csv", "json")
CAPTION_INSTRUCTION = "Please give a caption to the music."
# Where each split's annotations live on the Hugging Face hub (repo, candidate file paths).
HUB_FILES = {
    "mi-short": ("m-a-p/Music-Instruct", ("MusicInstruct/music_instruct_short.json",)),
    "mi-long": ("m-a-p/Music-Instruct", ("MusicInstruct/music_instruct_long.json",)),
    "musicqa": ("mu-llama/MusicQA", ("EvalMusicQA.json", "MusicQA/EvalMusicQA.json")),
    "musiccaps": ("google/MusicCaps", ("musiccaps-public.csv",)),
}
SHOWN = 5  # how many offending ids an error message lists


@dataclass
class EvalItem:
    """One test question: what to ask (audio, question) and the reference answer."""

    id: str | None
    audio: str | None
    question: str | None
    reference: str


@dataclass
class EvalConfig:
    """Everything `musilingo eval` needs; see docs/eval.md for each option."""

    predictions: list[Path] = field(default_factory=list)
    references: Path | None = None
    split: str | None = None
    data: Path | None = None
    model: str | None = None
    audio_dir: Path | None = None
    answers: Path | None = None
    ask_options: dict[str, Any] = field(default_factory=dict)  # AskConfig fields for answering the split
    profile: str = "standard"
    prediction_field: str = "answer"
    reference_field: str = "reference"
    bertscore: bool = True
    bertscore_model: str = "roberta-large"
    bertscore_layers: int | None = None
    bertscore_batch_size: int = 64
    floor: bool = True
    seed: int = 0
    train_captions: Path | None = None
    format: str = "table"
    output: Path | None = None
    per_item: Path | None = None
    write_per_item: bool = True
    hub_cache_dir: Path | None = None


@dataclass
class SystemResult:
    """The scores of one predictions file, with its floor, counts and statistics."""

    name: str
    path: str
    scores: dict[str, float | None]
    floor: dict[str, float | None] | None
    counts: dict[str, int]
    stats: dict[str, Any]
    notes: list[str]
    signatures: dict[str, str]
    per_item_path: str | None


@dataclass
class EvalReport:
    """What `run` returns: one SystemResult per predictions file plus the shared header facts."""

    profile: str
    systems: list[SystemResult]
    versions: dict[str, str]
    data_sources: dict[str, str]
    seed: int


# ---------------------------------------------------------------- reading files


def _read_json_or_jsonl(path: Path) -> Any:
    from musilingo_cli.core.journal import read_jsonl

    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        try:  # a JSONL file named .json
            return read_jsonl(path)
        except DataError:
            raise DataError(f"{path}: not JSON or JSONL ({err.msg} at line {err.lineno})") from None


def _records(data: Any, path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects, or an object of id -> object (ids filled in from the keys)."""
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return [{"id": str(key), **value} if "id" not in value else value for key, value in data.items()]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    raise DataError(f"{path}: expected a JSON list (or JSONL) of objects, or an object of id -> object")


def read_annotations(path: Path, split: str | None = None) -> list[EvalItem] | None:
    """The test items of a known annotations file (Music Instruct, MusicQA, MusicCaps CSV or
    all.json), read by the same readers as training; None when the file is none of these."""
    from musilingo_cli.data import datasets

    try:
        fmt = datasets.detect_format(path)
    except DataError:
        return None
    if fmt not in ("mi", "musicqa", "musiccaps"):
        return None
    kind = {"mi-short": "short", "mi-long": "long"}.get(split or "")
    examples = datasets.read_dataset(path, fmt, "test", mi_kind=kind)  # test = is_audioset_eval True
    return [EvalItem(e.id, e.meta["audio_ref"], e.question, e.answer) for e in examples]


def hub_file(split: str, cache_dir: Path | None = None) -> Path:
    """The split's annotations through the normal Hugging Face hub cache (download when online)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, candidates = HUB_FILES[split]
    for filename in candidates:
        try:
            return Path(hf_hub_download(repo, filename, repo_type="dataset", cache_dir=cache_dir))
        except EntryNotFoundError:
            continue
        except LocalEntryNotFoundError:
            raise DataError(
                f"{repo}/{filename} is not in the Hugging Face cache and the hub is offline: run "
                f"`hf download {repo} {filename} --repo-type dataset` with network, or pass --data FILE"
            ) from None
        except Exception as err:  # noqa: BLE001 - gated repo, HTTP error, ...: one line with the fix
            raise DataError(f"cannot fetch {repo}/{filename} ({type(err).__name__}); pass --data FILE") from None
    raise DataError(f"{repo} has none of {', '.join(candidates)}; pass --data FILE")


def load_split_items(split: str, data_file: Path | None = None, cache_dir: Path | None = None) -> list[EvalItem]:
    """The test items of a split, from `data_file` or the hub (MI and MusicCaps: is_audioset_eval)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(data_file) if data_file else hub_file(split, cache_dir)
    items = read_annotations(path, split)
    if items is None:
        raise DataError(f"{path} is not a Music Instruct, MusicQA or MusicCaps annotations file")
    return items  # never empty: the reader refuses a file with no test items


def _text(record: dict[str, Any], field_name: str, where: str) -> str | None:
    value = record.get(field_name)
    if value is None or isinstance(value, str):
        return value
    raise DataError(f"{where}: field {field_name!r} is {type(value).__name__}, not a string")


def read_references(path: Path, reference_field: str, split: str | None = None) -> list[EvalItem]:
    """References from an annotations file, or a JSON list / JSONL with `reference_field`."""
    items = read_annotations(path, split)
    if items is not None:
        return items
    records = _records(_read_json_or_jsonl(path), path)
    items = []
    for number, record in enumerate(records, start=1):
        text = _text(record, reference_field, f"{path} record {number}")
        if text is None:
            raise DataError(f"{path} record {number} has no {reference_field!r}; pass --reference-field (it has {', '.join(sorted(record))})")
        items.append(EvalItem(_opt(record, "id"), _opt(record, "audio"), _opt(record, "question"), text))
    return items


def _opt(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if value is None else str(value)


@dataclass
class Prediction:
    """One answer as read: its keys, text, embedded reference and whether `ask` failed on it."""

    id: str | None
    audio: str | None
    question: str | None
    answer: str
    reference: str | None
    failed: bool


def read_predictions(path: Path, prediction_field: str, reference_field: str) -> list[Prediction]:
    """Answers from JSONL (ask's output) or a JSON list / id-keyed object (other systems)."""
    records = _records(_read_json_or_jsonl(path), path)
    if not records:
        raise DataError(f"{path} holds no answers")
    out = []
    for number, record in enumerate(records, start=1):
        where = f"{path} record {number}"
        failed = record.get("error") is not None
        answer = _text(record, prediction_field, where)
        if answer is None and not failed and prediction_field not in record:
            raise DataError(f"{where} has no {prediction_field!r}; pass --prediction-field (it has {', '.join(sorted(record))})")
        out.append(Prediction(
            _opt(record, "id"), _opt(record, "audio"), _opt(record, "question"),
            "" if failed else (answer or ""), _text(record, reference_field, where), failed,
        ))
    return out


# ---------------------------------------------------------------- pairing


def _audio_key(audio: str | None, question: str | None) -> tuple[str, str] | None:
    if audio is None or question is None:
        return None
    return Path(audio).stem, question.strip()


def _unique(keys: list, what: str) -> None:
    seen, dup = set(), []
    for key in keys:
        if key in seen:
            dup.append(key)
        seen.add(key)
    if dup:
        raise DataError(f"{len(dup)} duplicate {what}, e.g. {', '.join(map(str, dup[:SHOWN]))}; each item must appear once")


def pair(predictions: list[Prediction], references: list[EvalItem] | None, source: str) -> tuple[list[Prediction], list[EvalItem], int]:
    """Align answers with reference items; returns (answers, references, references left unanswered).

    A reference item without a question takes the answer's question (the floor groups by it).

    Raises DataError for duplicates, answers without a reference, and count mismatches.
    """
    if references is None:
        missing = [i for i, p in enumerate(predictions, 1) if p.reference is None]
        if missing:
            raise DataError(f"{source}: {len(missing)} answers carry no reference (e.g. record {missing[0]}); pass --references FILE or --split")
        return predictions, [EvalItem(p.id, p.audio, p.question, p.reference) for p in predictions], 0
    if all(p.id for p in predictions) and all(r.id for r in references) and \
            {p.id for p in predictions} & {r.id for r in references}:
        pred_keys, ref_keys, what = [p.id for p in predictions], [r.id for r in references], "ids"
    else:
        pred_keys = [_audio_key(p.audio, p.question) for p in predictions]
        ref_keys = [_audio_key(r.audio, r.question) for r in references]
        what = "(audio, question) pairs"
        if None in pred_keys or None in ref_keys:
            if any(k is not None for k in pred_keys + ref_keys) or len(predictions) != len(references):
                raise DataError(
                    f"{source}: cannot pair {len(predictions)} answers with {len(references)} references: "
                    "give both sides an `id`, or `audio` and `question`, or equal counts in the same order"
                )
            return predictions, _with_questions(predictions, references), 0
    _unique(pred_keys, f"{what} in {source}")
    _unique(ref_keys, f"{what} in the references")
    by_key = dict(zip(ref_keys, references))
    missing = [k for k in pred_keys if k not in by_key]
    if missing:
        raise DataError(f"{source}: {len(missing)} answers have no reference, e.g. {', '.join(map(str, missing[:SHOWN]))}")
    return predictions, _with_questions(predictions, [by_key[k] for k in pred_keys]), len(references) - len(pred_keys)


def _with_questions(predictions: list[Prediction], references: list[EvalItem]) -> list[EvalItem]:
    return [r if r.question is not None else EvalItem(r.id, r.audio, p.question, r.reference)
            for p, r in zip(predictions, references)]


# ---------------------------------------------------------------- floor


def floor_references(questions: list[str], references: list[str], seed: int) -> tuple[list[str], int]:
    """For each item, the reference of another item asked the same question (seeded).

    Within a question group the items are shuffled and each takes the next one's reference (a
    random cycle, so never its own). Items whose question is unique take a random other item's
    reference; their count is returned and shown, because that part of the floor is weaker.
    Items without a question (e.g. caption files) all share the empty question: one instruction.
    """
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, question in enumerate(questions):
        groups[question.strip()].append(index)
    answers = list(references)
    fallback = 0
    for members in groups.values():
        if len(members) > 1:
            order = members[:]
            rng.shuffle(order)
            for here, there in zip(order, order[1:] + order[:1]):
                answers[here] = references[there]
    for members in groups.values():
        if len(members) == 1 and len(references) > 1:
            here = members[0]
            there = rng.randrange(len(references) - 1)
            answers[here] = references[there + (there >= here)]
            fallback += 1
    return answers, fallback


# ---------------------------------------------------------------- running


def resolve_audio(audio_dir: Path, audio: str) -> Path:
    """The file for an item's audio under `audio_dir`: the training lookup (the name as given, else
    `<name>` + an audio extension, as MusicCaps ytids need), else `<name>.*` in a subfolder."""
    from musilingo_cli.data.datasets import find_audio

    found = find_audio(audio_dir, audio, "mi")
    if found is not None:
        return found.resolve()
    matches = sorted(audio_dir.rglob(f"{Path(audio).name}.*"))
    return matches[0].resolve() if matches else audio_dir / audio  # a missing file becomes an error record in ask


def write_manifest(items: list[EvalItem], audio_dir: Path, path: Path) -> Path:
    """The split as an `ask` manifest: JSONL rows `{"id", "path", "question"}`, the --manifest schema of ask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            row = {"id": item.id, "path": str(resolve_audio(audio_dir, item.audio)), "question": item.question}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def answer_items(items: list[EvalItem], config: EvalConfig) -> Path:
    """Have `musilingo ask` answer the items into `config.answers` (resumable: ids already
    answered there are skipped); return that path. The split goes to ask as a manifest,
    `<answers>.manifest.jsonl`, so the records carry the split's item ids."""
    from musilingo_cli.pipelines import ask

    answers = config.answers or Path(f"{config.split}.answers.jsonl")
    manifest = write_manifest(items, config.audio_dir, answers.with_name(answers.stem + ".manifest.jsonl"))
    ask.run(ask.AskConfig(manifest=manifest, model=config.model, output=answers, **config.ask_options))
    return answers


def _answers_split(config: EvalConfig) -> bool:
    """A model is named (a checkpoint, or --encoder with --llm for an untrained adapter)."""
    return config.model is not None or bool(config.ask_options.get("encoder") and config.ask_options.get("llm"))


def _check(config: EvalConfig) -> None:
    if config.profile not in metrics.PROFILES:
        raise ConfigError(f"unknown --profile {config.profile!r}; choose {' or '.join(metrics.PROFILES)}")
    if config.format not in FORMATS:
        raise ConfigError(f"unknown --format {config.format!r}; choose one of {', '.join(FORMATS)}")
    if config.split is not None and config.split not in SPLITS:
        raise ConfigError(f"unknown --split {config.split!r}; choose one of {', '.join(SPLITS)}")
    if not config.predictions and not _answers_split(config):
        raise ConfigError("give --predictions FILE..., or --split with --model and --audio-dir to answer the split first")
    if _answers_split(config) and (config.split is None or config.audio_dir is None):
        raise ConfigError("--model needs --split and --audio-dir")
    if config.per_item is not None and len(config.predictions) > 1:
        raise ConfigError("--per-item names one file; with several --predictions each gets <name>.scores.jsonl")
    if config.bertscore and config.bertscore_model != "roberta-large" and config.bertscore_layers is None:
        raise ConfigError(f"--bertscore-model {config.bertscore_model} needs --bertscore-layers N")


def run(config: EvalConfig) -> EvalReport:
    """Answer the split if asked, score every predictions file, write per-item scores and --output."""
    _check(config)
    references = None
    if config.references is not None:
        references = read_references(config.references, config.reference_field, config.split)
    elif config.split is not None:
        references = load_split_items(config.split, config.data, config.hub_cache_dir)
    predictions = list(config.predictions)
    if _answers_split(config):
        predictions.append(answer_items(references, config))
    train = _read_train_captions(config.train_captions) if config.train_captions else None
    bert = metrics.BertScoreSpec(config.bertscore_model, config.bertscore_layers, config.bertscore_batch_size) if config.bertscore else None
    floors: dict[tuple, tuple[dict, list[str]]] = {}
    systems = [_score_file(path, references, config, bert, train, floors) for path in predictions]
    report = EvalReport(config.profile, systems, metrics.library_versions(), _data_sources(config), config.seed)
    if config.output is not None:
        fmt = "markdown" if config.format == "table" else config.format
        config.output.write_text(render_text(report, fmt), encoding="utf-8")
    return report


def _read_train_captions(path: Path) -> list[str]:
    """Training captions: a text file (one per line), MusicCaps CSV (is_audioset_eval False rows) or JSON(L)."""
    if path.suffix == ".txt":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [r["caption"] for r in csv.DictReader(f) if str(r.get("is_audioset_eval")) != "True"]
    data = _read_json_or_jsonl(path)
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return data
    records = _records(data, path)
    for key in ("caption", "reference", "answer", "caption_ground_truth"):
        if all(isinstance(r.get(key), str) for r in records):
            return [r[key] for r in records]
    raise DataError(f"{path}: training captions must be lines of text, a JSON list of strings, or records with a caption field")


def _data_sources(config: EvalConfig) -> dict[str, str]:
    from musilingo_cli.pipelines.evaluate import nltk_data

    sources = {}
    if nltk_data._wordnet_source:
        sources["wordnet"] = nltk_data._wordnet_source
    if nltk_data._punkt_source:
        sources["punkt_tab"] = nltk_data._punkt_source
    return sources


def _score_file(path: Path, references: list[EvalItem] | None, config: EvalConfig, bert, train, floors) -> SystemResult:
    preds = read_predictions(path, config.prediction_field, config.reference_field)
    preds, paired, unanswered = pair(preds, references, str(path))
    refs = [r.reference for r in paired]
    empty_refs = [p.id or str(i) for i, (p, r) in enumerate(zip(preds, refs), 1) if not r.strip()]
    if empty_refs:
        raise DataError(f"{len(empty_refs)} references are empty, e.g. {', '.join(empty_refs[:SHOWN])}; fix the references file")
    answers = [p.answer for p in preds]
    result = metrics.score(answers, refs, config.profile, bert)
    counts = {
        "n": len(preds),
        "empty": sum(1 for p in preds if not p.failed and not p.answer.strip()),
        "failed": sum(1 for p in preds if p.failed),
        "unanswered": unanswered,
        "floor_fallback": 0,
    }
    notes = list(result.notes)
    if counts["failed"]:
        notes.append(f"{counts['failed']} answers failed in ask and are scored as empty answers")
    if unanswered:
        notes.append(f"{unanswered} references have no answer in this file and are not scored")
    floor, floor_refs = None, None
    if config.floor and len(preds) > 1:
        questions = [r.question or "" for r in paired]
        key = (tuple(questions), tuple(refs))
        if key not in floors:
            floor_refs, fallback = floor_references(questions, refs, config.seed)
            floors[key] = (metrics.score(floor_refs, refs, config.profile, bert).scores, floor_refs, fallback)
        floor, floor_refs, counts["floor_fallback"] = floors[key]
    per_item_path = _write_per_item(path, preds, refs, result, floor_refs, config)
    return SystemResult(
        path.stem, str(path), result.scores, floor, counts,
        metrics.descriptive_stats(answers, train), notes, result.signatures, per_item_path,
    )


def _write_per_item(path: Path, preds, refs, result, floor_refs, config: EvalConfig) -> str | None:
    if not config.write_per_item:
        return None
    target = config.per_item or path.with_name(path.stem + ".scores.jsonl")
    rows = []
    for index, (p, ref, scores) in enumerate(zip(preds, refs, result.per_item)):
        status = "failed" if p.failed else ("empty" if not p.answer.strip() else "ok")
        row = {"id": p.id, "audio": p.audio, "question": p.question, "answer": p.answer, "reference": ref,
               "status": status, "profile": config.profile, **scores}
        if floor_refs is not None:
            row["floor_reference"] = floor_refs[index]
        rows.append(json.dumps(row, ensure_ascii=False))
    try:
        target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    except OSError as err:
        from musilingo_cli.core.console import warn

        warn(f"per-item scores not written to {target} ({err.strerror}); pass --per-item FILE")
        return None
    return str(target)


# ---------------------------------------------------------------- rendering


STAT_ROWS = (
    ("vocab_size", "vocab size"), ("type_token_ratio", "type/token ratio"),
    ("vocab_diversity", "vocab diversity (vs train)"), ("novel_vocab", "novel vocab (vs train)"),
    ("novel_captions", "novel captions (vs train)"), ("length_mean", "length mean (words)"),
    ("length_std", "length std (words)"),
)
COUNT_ROWS = (("n", "items scored"), ("empty", "empty answers"), ("failed", "failed in ask (scored empty)"),
              ("unanswered", "references without answer"), ("floor_fallback", "floor: unique question, random ref"))


def header_lines(report: EvalReport) -> list[str]:
    """Profile, signatures, library versions and data sources: printed above every table."""
    lines = [f"profile: {metrics.DESCRIPTIONS[report.profile]}"]
    signatures = {}
    for system in report.systems:
        signatures.update(system.signatures)
    for name, signature in signatures.items():
        lines.append(f"{name} signature: {signature}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    if report.data_sources:
        lines.append("data: " + ", ".join(f"{k} from {v}" for k, v in report.data_sources.items()))
    lines.append(f"floor: each item answered with the reference of another item with the same question (seed {report.seed})")
    return lines


def _columns(report: EvalReport) -> list[tuple[str, dict, dict]]:
    """(title, scores, extra) per column: each system, then its floor (one floor if all share it)."""
    columns = []
    floors = [s.floor for s in report.systems]
    shared = all(f == floors[0] for f in floors)
    for system in report.systems:
        columns.append((system.name, system.scores, {**system.counts, **system.stats}))
        if system.floor is not None and not shared:
            columns.append((f"floor ({system.name})", system.floor, {}))
    if shared and floors and floors[0] is not None:
        columns.append(("floor", floors[0], {"floor_fallback": report.systems[0].counts["floor_fallback"]}))
    return columns


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def table_rows(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """The table as header + rows of strings (shared by rich, markdown and csv)."""
    columns = _columns(report)
    labels = metrics.LABELS[report.profile]
    header = ["metric"] + [title for title, _, _ in columns]
    rows = []
    for key in metrics.METRIC_KEYS:
        if report.profile == "musilingo-paper" and key in ("bleu1", "bleu2", "bleu3"):
            continue  # qa.py computes no BLEU-1..3; JSON keeps them as null
        rows.append([labels[key]] + [_cell(scores.get(key)) for _, scores, _ in columns])
    for key, label in COUNT_ROWS + STAT_ROWS:
        rows.append([label] + [_cell(extra.get(key)) for _, _, extra in columns])
    return header, rows


def _notes(report: EvalReport) -> list[str]:
    return [f"{s.name}: {note}" for s in report.systems for note in s.notes]


def rich_table(report: EvalReport):
    """A rich Table for stdout, titled with the profile and captioned with signatures and versions."""
    from rich.table import Table

    header, rows = table_rows(report)
    table = Table(title=f"musilingo eval - profile {report.profile}", caption="\n".join(header_lines(report) + _notes(report)),
                  caption_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def report_json(report: EvalReport) -> list[dict[str, Any]]:
    """One object per predictions file: METRIC_KEYS (0-1), profile, n, floor, counts, stats, versions."""
    out = []
    for s in report.systems:
        out.append({
            "predictions": s.path, **s.scores, "profile": report.profile, "n": s.counts["n"],
            "floor": s.floor, "counts": s.counts, "stats": s.stats, "notes": s.notes,
            "signatures": s.signatures, "versions": report.versions, "data": report.data_sources,
            "seed": report.seed, "per_item": s.per_item_path,
        })
    return out


def render_text(report: EvalReport, fmt: str) -> str:
    """The report as markdown, csv or json text."""
    if fmt == "json":
        return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"
    header, rows = table_rows(report)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        pad = [""] * (len(header) - 2)
        writer.writerow(["profile", metrics.DESCRIPTIONS[report.profile]] + pad)
        writer.writerow(["versions", "; ".join(f"{k} {v}" for k, v in report.versions.items())] + pad)
        return buffer.getvalue()
    lines = [f"- {line}" for line in header_lines(report) + _notes(report)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
