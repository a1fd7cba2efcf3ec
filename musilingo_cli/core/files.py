"""Reading users' JSON and JSONL files (captions, manifests, datasets, predictions) with one-line
errors that name the file and line. Journals we write ourselves are read by `journal.read_jsonl`,
which also tolerates a torn last line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import DataError


def read_json(path: str | Path) -> Any:
    """The whole file as JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def iter_jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line; a line that is not a JSON object raises."""
    with Path(path).open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected one JSON object per line, got {type(row).__name__}")
            yield number, row


def read_jsonl_objects(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """All (line number, object) pairs of a JSONL file."""
    return list(iter_jsonl_objects(path))
