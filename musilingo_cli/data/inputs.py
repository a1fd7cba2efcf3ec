"""What `musilingo ask` answers: (audio, question) items from files, directories, globs and
manifests, each with a stable id that is also the resume key of the output file.

An item's id is the manifest's `id` when it has one, else `sha1(resolved path + "\\n" + question)`
cut to 16 hex digits: the same file asked the same question always gets the same id, wherever
the command is run from and however the path was spelled.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import AudioError, ConfigError, DataError
from musilingo_cli.core.files import looks_like_json, read_csv_rows, read_jsonl_objects
from musilingo_cli.model.audio import AUDIO_EXTENSIONS, read_audio

_GLOB_CHARS = set("*?[")
_MANIFEST_COLUMNS = {"path", "question", "id"}


@dataclass(frozen=True)
class Item:
    """One answer to produce: `audio` as the user gave it, `source` the resolved file path."""

    id: str
    audio: str
    question: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def item_id(path: str | Path, question: str) -> str:
    """Stable id of (audio file, question): sha1 of the resolved path and the question, 16 hex digits."""
    key = f"{Path(path).expanduser().resolve()}\n{question}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def expand_paths(args: list[str]) -> list[str]:
    """Files as given; directories searched recursively for audio extensions; globs expanded.

    Anything that matches nothing is kept as given, so it becomes an error record ("no such
    file") rather than silently vanishing. Duplicates (by resolved path) are dropped.
    """
    found: list[str] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            found += _audio_under(path)
        elif not path.exists() and _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(str(path), recursive=True))
            for m in matches:
                found += _audio_under(Path(m)) if Path(m).is_dir() else [m]
            found += [] if matches else [arg]
        else:
            found.append(str(path) if arg.startswith("~") else arg)
    return _unique(found)


def check_readable(item: Item) -> None:
    """Raise AudioError (one line: what is wrong and the fix) unless the item's audio decodes. For a
    run of one file without an output file, so that a typo is said at once, before any model loads,
    instead of as an error record. Decodes at most the first second."""
    check_audio_file(item.audio, item.source)


def check_audio_file(audio: str, source: str | None = None) -> None:
    """Raise AudioError (one line) unless `source` (default: `audio`, the path as the user gave it)
    exists and its first second decodes; for commands about one file (ask, chat) before a model loads."""
    source = source or audio
    if not Path(source).exists():
        raise AudioError(f"{audio}: no such file; check the path (a relative path starts in {Path.cwd()})")
    read_audio(source, 16000, max_seconds=1.0)


def _audio_under(directory: Path) -> list[str]:
    """Audio files below `directory` (any depth), hidden files and folders left out, sorted."""
    files = [
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    ]
    return [str(p) for p in sorted(files)]


def _unique(paths: list[str]) -> list[str]:
    seen: set[Path] = set()
    out = []
    for p in paths:
        key = Path(p).resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def items_for(paths: list[str], questions: list[str]) -> list[Item]:
    """Every path asked every question, grouped by file (questions about one file stay together)."""
    return [Item(item_id(p, q), p, q, str(Path(p).resolve())) for p in paths for q in questions]


def read_manifest(path: str | Path, default_questions: list[str]) -> list[Item]:
    """Items from a CSV/TSV or JSONL manifest with a `path` column and optional `question`, `id`.

    Relative paths are taken relative to the manifest's own folder. A row without a question is
    asked `default_questions` (-q / --caption / the last argument); with several of them a row
    id becomes "<id>#0", "<id>#1", ... Other columns travel into the record under `extra`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--manifest {path}: no such file")
    is_json = path.suffix.lower() in (".jsonl", ".ndjson", ".json") or looks_like_json(path)
    rows = read_jsonl_objects(path) if is_json else _read_csv_rows(path)
    items = []
    for number, row in rows:
        audio = str(row.get("path") or "").strip()
        if not audio:
            raise DataError(f"{path}:{number}: no `path`; every row needs the audio file's path")
        source = Path(audio).expanduser()
        source = source if source.is_absolute() else path.parent / source
        asked = [str(row["question"])] if row.get("question") not in (None, "") else default_questions
        if not asked:
            raise DataError(
                f"{path}:{number}: no `question` in this row and none on the command line "
                "(add a question column, or pass -q QUESTION or --caption)"
            )
        extra = {k: v for k, v in row.items() if k not in _MANIFEST_COLUMNS}
        given = row.get("id")
        for k, q in enumerate(asked):
            # one id per row; several command-line questions make it "<id>#<question number>"
            ident = item_id(source, q) if given in (None, "") else str(given) if len(asked) == 1 else f"{given}#{k}"
            items.append(Item(ident, audio, q, str(source.resolve()), extra))
    _check_unique_ids(path, items)
    return items


def _read_csv_rows(path: Path) -> list[tuple[int, dict]]:
    try:
        columns, rows = read_csv_rows(path)
    except DataError as err:
        if "no header row" not in str(err):
            raise
        columns, rows = [], []
    if "path" not in columns:
        raise DataError(f"{path}: a manifest needs a `path` column (found: {', '.join(columns) or 'no header'})")
    return rows


def _check_unique_ids(path: Path, items: list[Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DataError(f"{path}: id {item.id!r} appears twice; ids key the output file, so they must be unique")
        seen.add(item.id)
