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

import filelock

from musilingo_cli.core.errors import ConfigError, DataError, MusilingoError

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: umask can only be read by setting it


class JournalWriteError(MusilingoError):
    """The output file cannot be written (disk full, read-only, gone); what was written stays."""


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
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the user's file, not our temporary one
        raise type(err)(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600; the result gets the usual permissions
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as err:  # e.g. a folder at `path`: name the user's file, not our temporary one
            raise type(err)(err.errno, err.strerror, str(path)) from None
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
        try:
            os.replace(tmp, path)
        except OSError as err:  # e.g. a folder at `path`: name the user's file, not our temporary one
            raise type(err)(err.errno, err.strerror, str(path)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def rewrite_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file by `records`, atomically (e.g. to drop superseded records)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def hold_lock(path: str | Path) -> filelock.BaseFileLock:
    """The exclusive lock of the file `path` (`filelock`, on PATH.lock), held until `.release()`.
    Raises ConfigError (one line) when another process holds it: it is writing that file."""
    lock = filelock.FileLock(f"{path}.lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ConfigError(
            f"{path}: another process is writing this file (it holds {path}.lock); "
            "wait for it to finish or choose another output file"
        ) from None
    return lock


class Journal:
    """An append-only JSONL file keyed by `key(record)`; `done` holds the keys already written.

    Opening repairs a torn last line (one that does not parse; a last record that only lacks its
    newline is kept) so the next append starts on a fresh line, and refuses lines that are not
    records (`key` must work on them) with one DataError line. `lock=True` holds an exclusive
    lock (`filelock`, on PATH.lock) until `close`, so a second writer of the same file is refused
    in one ConfigError line. `append` flushes each record, so `kill -9` loses at most the record
    being written; `sync` (or `append(..., sync=True)`) also fsyncs, for power loss.
    Failing to write raises JournalWriteError (one line); records written before stay.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], str], lock: bool = False):
        self.path = Path(path)
        self.key = key
        self._lock = None
        try:
            if self.path.is_dir():
                raise IsADirectoryError(21, "is a directory")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if lock:
                self._lock = hold_lock(self.path)
            _truncate_torn_tail(self.path)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as err:
            self.close()
            what = "it is a folder" if self.path.is_dir() else (err.strerror or str(err))
            raise ConfigError(
                f"{self.path}: cannot write the output file here ({what}); choose another output file"
            ) from None
        try:
            self.records = read_jsonl(self.path)
            self.done = {_key(self.path, key, number, r) for number, r in enumerate(self.records, start=1)}
        except BaseException:
            self.close()
            raise

    def append(self, record: dict[str, Any], sync: bool = True) -> None:
        """Write one record (flushed; fsynced too when `sync`) and remember its key."""
        try:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        except OSError as err:
            raise JournalWriteError(
                f"{self.path}: writing a record failed ({err.strerror or err}); the "
                f"{len(self.records)} records before it are kept, rerun to go on"
            ) from None
        self.records.append(record)
        self.done.add(self.key(record))

    def sync(self) -> None:
        """fsync what was appended (once per batch keeps the crash guarantee cheap)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as err:
            raise JournalWriteError(
                f"{self.path}: writing records failed ({err.strerror or err}); rerun to answer what is missing"
            ) from None

    def close(self) -> None:
        """Close the file and release the lock (appends after this raise)."""
        file = getattr(self, "_file", None)
        try:
            if file is not None and not file.closed:
                file.close()
        except OSError:
            pass
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(path: Path, key: Callable[[dict[str, Any]], str], number: int, record: Any) -> str:
    """key(record), or one DataError line when the file holds JSON of another shape."""
    try:
        if not isinstance(record, dict):
            raise TypeError
        return key(record)
    except (KeyError, TypeError, IndexError):
        shown = json.dumps(record, ensure_ascii=False)
        raise DataError(
            f"{path}: record {number} ({shown[:60]}) is not a record of this output file (a JSON object "
            "with an `id`); choose another output file or remove it"
        ) from None


def _truncate_torn_tail(path: Path) -> None:
    """Make the file end at a line break: a last line that parses keeps its record (gets its newline),
    a torn one (a crash mid-write) is cut off."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
    except ValueError:
        with path.open("r+b") as f:
            f.truncate(cut)
        return
    with path.open("ab") as f:
        f.write(b"\n")
