"""Readers of `musilingo eval`'s inputs: split annotations (a local file or the Hugging Face hub),
reference files, predictions files (Prediction) and training captions, with the field checks that
turn a malformed record into one DataError line.

Item ids (stable for a given annotations file): Music Instruct `{ytid}:{index in the file's QA
list}`, MusicQA `{audio_name}:{index in the list}`, MusicCaps `{ytid}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.core.files import read_csv_rows, read_json, read_text
from musilingo_cli.pipelines.evaluate.config import HUB_FILES, SPLITS, EvalItem


def _read_json_or_jsonl(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    return read_json(path)  # core.files: BOM, CRLF, JSON vs JSON lines by content, encoding errors


def _records(data: Any, path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects, an object of id -> object (ids filled in from the keys), or one object."""
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return [{"id": str(key), **value} if "id" not in value else value for key, value in data.items()]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    if isinstance(data, dict) and data:  # one record: a one-line JSONL file reads as a JSON document
        return [data]
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
        except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: caught first
            raise DataError(
                f"{repo}/{filename} is not in the Hugging Face cache and the hub is offline: run "
                f"`hf download {repo} {filename} --repo-type dataset` with network, or pass --data FILE"
            ) from None
        except EntryNotFoundError:  # the repository has no file of this name: try the next one
            continue
        except Exception as err:  # noqa: BLE001 - gated repo, HTTP error, ...: one line with the fix
            raise DataError(f"cannot fetch {repo}/{filename} ({type(err).__name__}); pass --data FILE") from None
    raise DataError(f"{repo} has none of {', '.join(candidates)}; pass --data FILE")


def load_split_items(split: str, data_file: Path | None = None, cache_dir: Path | None = None) -> list[EvalItem]:
    """The test items of a split, from `data_file` or the hub (MI and MusicCaps: is_audioset_eval)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(data_file) if data_file else hub_file(split, cache_dir)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file; pass the split's annotations file (docs/eval.md says where)")
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
            raise DataError(
                f"{path} record {number} has no {reference_field!r}; "
                f"pass --reference-field (it has {', '.join(sorted(record))})"
            )
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
            raise DataError(
                f"{where} has no {prediction_field!r}; pass --prediction-field (it has {', '.join(sorted(record))})"
            )
        out.append(
            Prediction(
                _opt(record, "id"),
                _opt(record, "audio"),
                _opt(record, "question"),
                "" if failed else (answer or ""),
                _text(record, reference_field, where),
                failed,
            )
        )
    return out


def read_train_captions(path: Path) -> list[str]:
    """Training captions: a text file (one per line), MusicCaps CSV (is_audioset_eval False rows) or JSON(L)."""
    if path.suffix == ".txt":
        return [line for line in read_text(path).splitlines() if line.strip()]
    if path.suffix == ".csv":
        return [r["caption"] for _, r in read_csv_rows(path)[1] if str(r.get("is_audioset_eval")) != "True"]
    data = _read_json_or_jsonl(path)
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return data
    records = _records(data, path)
    for key in ("caption", "reference", "answer", "caption_ground_truth"):
        if all(isinstance(r.get(key), str) for r in records):
            return [r[key] for r in records]
    raise DataError(
        f"{path}: training captions must be lines of text, a JSON list of strings, or records with a caption field"
    )
