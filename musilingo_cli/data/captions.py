"""Caption-set readers: MusicCaps CSV by default, any CSV or JSONL through column names.

Every reader returns the same `CaptionSet`: one `Caption` per usable row, in file order, plus
the number of rows skipped because their caption was empty. Anything else that is wrong with
the file (missing column, empty file, a row that cannot be read, a duplicate id) is a DataError
that names the file, the line and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import DataError
from musilingo_cli.core.files import looks_like_json, read_csv_rows, read_jsonl_objects

# MusicCaps' own column names (see ../shared/data/README.md).
DEFAULT_ID_COLUMN = "ytid"
DEFAULT_CAPTION_COLUMN = "caption"
DEFAULT_SPLIT_COLUMN = "is_audioset_eval"

_TRUE = {"true", "1", "yes", "y", "t", "test", "eval", "evaluation"}
_FALSE = {"false", "0", "no", "n", "f", "train", "training", "", "none", "null"}


@dataclass(frozen=True)
class Caption:
    """One captioned clip: `is_eval` is True for the test split (MusicCaps `is_audioset_eval`)."""

    id: str
    text: str
    is_eval: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaptionSet:
    """The captions of one file, and how many rows had an empty caption."""

    captions: list[Caption]
    skipped_empty: int
    path: Path


def read_captions(
    path: str | Path,
    id_column: str = DEFAULT_ID_COLUMN,
    caption_column: str = DEFAULT_CAPTION_COLUMN,
    split_column: str | None = DEFAULT_SPLIT_COLUMN,
) -> CaptionSet:
    """Read a CSV (`.csv`/`.tsv`) or JSONL (`.jsonl`/`.json` lines) caption file.

    `split_column=None` (or "") treats every clip as train (`is_eval=False`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: captions file not found; pass --captions PATH")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the captions file is empty")
    split_column = split_column or None
    is_json = path.suffix.lower() in {".jsonl", ".json", ".ndjson"} or looks_like_json(path)
    rows = _jsonl_rows(path) if is_json else _csv_rows(path)
    return _to_caption_set(path, rows, id_column, caption_column, split_column)


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    return read_csv_rows(path)


def _jsonl_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    columns: dict[str, None] = {}
    rows = read_jsonl_objects(path)
    for _, row in rows:
        columns.update(dict.fromkeys(row))
    if not rows:
        raise DataError(f"{path}: the captions file has no rows")
    return list(columns), rows


def _to_caption_set(path: Path, parsed, id_column: str, caption_column: str, split_column: str | None) -> CaptionSet:
    columns, rows = parsed
    if not rows:
        raise DataError(f"{path}: the captions file has a header but no rows")
    for flag, name in (
        ("--id-column", id_column),
        ("--caption-column", caption_column),
        ("--split-column", split_column),
    ):
        if name is not None and name not in columns:
            hint = " (or --split-column '' to treat every clip as train)" if flag == "--split-column" else ""
            raise DataError(f"{path}: no column '{name}'; columns found: {', '.join(columns)}; pass {flag} NAME{hint}")
    captions: list[Caption] = []
    seen: dict[str, int] = {}
    skipped = 0
    for line, row in rows:
        if id_column not in row:
            raise DataError(f"{path}:{line}: row has no '{id_column}'")
        clip_id = str(row[id_column]).strip()
        text = row.get(caption_column)
        text = "" if text is None else str(text).strip()
        if not text:
            skipped += 1
            continue
        if not clip_id:
            raise DataError(f"{path}:{line}: empty '{id_column}'; every caption needs an id")
        if clip_id in seen:
            raise DataError(f"{path}:{line}: id '{clip_id}' already used on line {seen[clip_id]}; ids must be unique")
        seen[clip_id] = line
        is_eval = _parse_split(path, line, split_column, row.get(split_column)) if split_column else False
        extra = {k: v for k, v in row.items() if k not in {id_column, caption_column, split_column} and k is not None}
        captions.append(Caption(clip_id, text, is_eval, extra))
    return CaptionSet(captions, skipped, path)


def _parse_split(path: Path, line: int, column: str, value: Any) -> bool:
    """MusicCaps says True/False; other sets often say train/test. Test split -> True."""
    if isinstance(value, bool):
        return value
    norm = str(value).strip().lower() if value is not None else ""
    if norm in _TRUE:
        return True
    if norm in _FALSE:
        return False
    raise DataError(f"{path}:{line}: '{column}' is '{value}'; expected True/False or train/test")
