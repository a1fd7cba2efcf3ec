"""Append-only JSONL files that survive crashes: every long job (ask, make-mi, eval, train
metrics) writes one record per finished item and resumes by reading what is already there."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a torn last line (a crash mid-write) is ignored, any other bad line raises."""
    return list(_iter_records(Path(path)))


def _iter_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            yield json.loads(raw)
        except json.JSONDecodeError as err:
            if number == len(lines):  # unterminated last line: the write was interrupted
                return
            from musilingo_cli.core.errors import DataError

            raise DataError(f"{path}:{number}: not valid JSON ({err.msg}); fix or remove that line") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename: readers never see half a file, and
    concurrent writers (several ranks) never share a temp file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rewrite_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file by `records`, atomically (e.g. to drop superseded records)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class Journal:
    """An append-only JSONL file keyed by `key(record)`; `done` holds the keys already written.

    Opening repairs a torn last line so the next append starts on a fresh line. Each append is
    flushed and fsynced, so `kill -9` loses at most the record being written.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], str]):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_torn_tail(self.path)
        self.records = read_jsonl(self.path)
        self.done = {key(r) for r in self.records}
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably and remember its key."""
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)
        self.done.add(self.key(record))

    def close(self) -> None:
        """Close the file (appends after this raise)."""
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(cut)
