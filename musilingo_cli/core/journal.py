"""Append-only JSONL files that survive crashes: every long job (ask, make-mi, eval, train
metrics) writes one record per finished item and resumes by reading what is already there."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: umask can only be read by setting it


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
    """Write `text` (UTF-8) atomically: see `atomic_path`."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write(text)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary file beside `path` to write into; on success it is fsynced and renamed
    onto `path`, on error removed. Its name is unpredictable and it is created exclusively
    (`tempfile.mkstemp`), so a symlink or file planted at a guessable name is never followed or
    overwritten, and concurrent writers (several ranks) never share one. Readers of `path` see
    the old file or the whole new one, never half of it."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600; the result gets the usual permissions
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh, unpredictably named folder beside `path` to fill; on success it replaces `path`
    (an old `path` is removed first), on error it is removed."""
    import shutil

    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
