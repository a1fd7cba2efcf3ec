"""Training data: readers for the real dataset schemas, audio lookup under --audio-dir, and the
check that enough audio is there.

Every reader returns `Example`s: one audio file, an optional question (None in stage 1), the
answer text, an id and the crop the official recipe used for that dataset:

    msd        LP-MusicCaps-MSD `path`, `caption_writing`: JSON list, JSONL, parquet or a
               `save_to_disk` folder; audio `{audio_dir}/{path}` (+ `.mp3`, ...); crop 30.5 s random
    musiccaps  MusicCaps CSV (`ytid`, `caption`, `is_audioset_eval`) or `{"ann": [...]}` JSON;
               audio `{audio_dir}/{ytid}.*`; the full clip
    mi         Music Instruct `{"QA": [{question, answer, ytid, is_audioset_eval}]}` (short, long,
               mixed); audio `{audio_dir}/{ytid}.*`; the full clip
    musicqa    MusicQA list of `{audio_name, conversation: [human, gpt]}`; audio
               `{audio_dir}/{audio_name}`; crop 15.5 s random
    jsonl      one `{"audio", "question", "answer"}` per line (users' own data); audio absolute, or
               under `--audio-dir` (default: the file's folder); the full clip

Splits follow the official code: MusicCaps and MI train on `is_audioset_eval == False` and test
on True; MSD folders hold named splits; MusicQA and plain JSONL files are one split each.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import DataError
from musilingo_cli.core.files import iter_jsonl_objects, read_csv_rows, read_json
from musilingo_cli.model.audio import AUDIO_EXTENSIONS
from musilingo_cli.model.config import CAPTION_INSTRUCTION

FORMATS = ("msd", "musiccaps", "mi", "musicqa", "jsonl")
SPLITS = ("train", "test", "all")
# The official recipes crop these datasets randomly (seconds, at the encoder's rate: see audio.random_crop).
RANDOM_CROP_SECONDS = {"msd": 30.5, "musicqa": 15.5}
# every suffix `ask` accepts (one list: a file ask finds, train finds too), the common ones tried first
_COMMON = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".aiff", ".aif")
_AUDIO_SUFFIXES = _COMMON + tuple(sorted(AUDIO_EXTENSIONS - set(_COMMON)))


@dataclass
class Example:
    """One training item. `audio` is resolved against --audio-dir (None when not found)."""

    audio: Path | None
    question: str | None
    answer: str
    id: str
    format: str
    crop_seconds: float | None = None  # None: the full clip
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedData:
    """Examples whose audio exists, plus what was dropped and why."""

    examples: list[Example]
    missing: list[str]  # audio references not found under --audio-dir
    total: int


def load_examples(
    paths: Iterable[str | Path], audio_dir: str | Path | None, fmt: str | None = None, split: str = "train"
) -> LoadedData:
    """Read every dataset file, keep the requested split, and find each item's audio."""
    examples, missing, total = [], [], 0
    for path in paths:
        path = Path(path)
        kind = fmt or detect_format(path)
        items = read_dataset(path, kind, split)
        base = Path(audio_dir) if audio_dir else (path.parent if kind == "jsonl" else None)
        if base is None:
            raise DataError(f"{path}: pass --audio-dir, the folder that holds the {kind} audio files")
        for item in items:
            total += 1
            found = find_audio(base, item.meta["audio_ref"], kind)
            if found is None:
                missing.append(str(base / item.meta["audio_ref"]))
            else:
                item.audio = found
                examples.append(item)
    return LoadedData(examples, missing, total)


def check_missing(skipped: int, total: int, max_fraction: float, example: str | None, what: str = "missing") -> None:
    """DataError when more than `max_fraction` of the items lost their audio."""
    if total and skipped / total > max_fraction:
        raise DataError(
            f"{skipped} of {total} items ({skipped / total:.1%}) have {what} audio, more than the allowed "
            f"{max_fraction:.1%} (e.g. {example}); check --audio-dir and the file naming, "
            "or raise --max-missing-fraction"
        )


# --- format detection --------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """Guess the schema from the file: its extension, then the keys of its first record."""
    if not path.exists():
        raise DataError(f"{path}: no such dataset file or folder")
    if path.is_dir() or path.suffix == ".parquet":
        return "msd"
    if path.suffix == ".csv":
        return "musiccaps"
    first = _first_record(path)
    if isinstance(first, dict) and "QA" in first:
        return "mi"
    if isinstance(first, dict) and "ann" in first:
        return "musiccaps"
    record = first[0] if isinstance(first, list) and first else first
    if not isinstance(record, dict):
        raise DataError(f"{path}: cannot tell the dataset format; pass --format ({', '.join(FORMATS)})")
    if "caption_writing" in record:
        return "msd"
    if "conversation" in record:
        return "musicqa"
    if "audio" in record and "answer" in record:
        return "jsonl"
    raise DataError(
        f"{path}: records with keys {sorted(record)} match no known dataset; pass --format "
        f"({', '.join(FORMATS)}) or write JSONL with audio, question, answer"
    )


def _first_record(path: Path) -> Any:
    return read_json(path)  # a JSON document or JSON lines, told apart by content (lines: a list)


# --- readers -----------------------------------------------------------------------------------


def read_dataset(path: Path, fmt: str, split: str = "train", mi_kind: str | None = None) -> list[Example]:
    """Read one dataset file in a known format (see the module docstring). `mi_kind` keeps only
    the "short" or "long" items of a mixed Music Instruct file (items without a kind are kept)."""
    if split not in SPLITS and fmt != "msd":
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    readers = {
        "msd": read_msd,
        "musiccaps": read_musiccaps,
        "mi": read_mi,
        "musicqa": read_musicqa,
        "jsonl": read_jsonl_qa,
    }
    if fmt not in readers:
        raise DataError(f"unknown dataset format {fmt!r}: use one of {', '.join(FORMATS)}")
    items = readers[fmt](path, split)
    if mi_kind is not None and fmt == "mi":
        items = [e for e in items if e.meta.get("kind") in (None, mi_kind)]
    if not items:
        raise DataError(f"{path}: no {split} items in this {fmt} file")
    return items


def read_msd(path: Path, split: str = "train") -> list[Example]:
    """LP-MusicCaps-MSD: `path` + `caption_writing` (stage-1 captions, no question)."""
    rows = _msd_rows(path, split)
    out = []
    for i, row in enumerate(rows):
        _require(row, ("path", "caption_writing"), path, i)
        ident = str(row.get("track_id") or row["path"])
        out.append(
            Example(
                None,
                None,
                str(row["caption_writing"]),
                ident,
                "msd",
                RANDOM_CROP_SECONDS["msd"],
                {"audio_ref": str(row["path"])},
            )
        )
    return out


def _msd_rows(path: Path, split: str) -> list[dict]:
    if path.is_dir():
        return _read_saved_dataset(path, split)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=["path", "caption_writing"]).to_pylist()
    data = read_json(path)  # a JSON document or JSON lines (a list), whatever the extension
    if isinstance(data, dict) and split in data:  # {"train": [...], "test": [...]}
        data = data[split]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{path, caption_writing}} records")
    return data


def _read_saved_dataset(path: Path, split: str) -> list[dict]:
    """A Hugging Face `save_to_disk` folder: arrow IPC stream shards `data-*.arrow`, read with
    pyarrow alone (no `datasets` dependency). A DatasetDict folder picks `split`."""
    import pyarrow as pa

    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise DataError(f"{path}: no split {split!r} (it has {', '.join(splits)}); pass --split")
        path = path / split
    shards = _arrow_shards(path)
    rows: list[dict] = []
    for shard in shards:
        with pa.memory_map(str(shard)) as source:
            table = pa.ipc.open_stream(source).read_all()
        missing = {"path", "caption_writing"} - set(table.column_names)
        if missing:
            raise DataError(f"{shard}: no column {', '.join(sorted(missing))}; is this LP-MusicCaps-MSD?")
        rows += table.select(
            ["path", "caption_writing"] + (["track_id"] if "track_id" in table.column_names else [])
        ).to_pylist()
    return rows


def _arrow_shards(path: Path) -> list[Path]:
    state = path / "state.json"
    if state.exists():
        files = [path / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        if files:
            return files
    shards = sorted(path.glob("data-*.arrow")) or sorted(path.glob("*.arrow"))
    if not shards:
        raise DataError(f"{path}: no data-*.arrow files; is this a Hugging Face save_to_disk folder?")
    return shards


def read_musiccaps(path: Path, split: str = "train") -> list[Example]:
    """MusicCaps CSV (or the official `{"ann": [...]}` JSON): caption as the answer to the fixed
    captioning instruction."""
    if path.suffix == ".csv":
        rows = [row for _, row in read_csv_rows(path)[1]]
    else:
        data = read_json(path)
        rows = data.get("ann") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise DataError(f'{path}: expected a MusicCaps CSV or {{"ann": [...]}} JSON')
    out = []
    for i, row in enumerate(rows):
        _require(row, ("ytid", "caption"), path, i)
        if _in_split(row, split, path, i):
            out.append(
                Example(
                    None,
                    CAPTION_INSTRUCTION,
                    str(row["caption"]),
                    str(row["ytid"]),
                    "musiccaps",
                    None,
                    {"audio_ref": str(row["ytid"])},
                )
            )
    return out


def read_mi(path: Path, split: str = "train") -> list[Example]:
    """Music Instruct: `{"QA": [{question, answer, ytid, is_audioset_eval, ...}]}`."""
    data = read_json(path)
    rows = data.get("QA") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise DataError(f'{path}: expected Music Instruct JSON {{"QA": [...]}}')
    out = []
    for i, row in enumerate(rows):
        _require(row, ("question", "answer", "ytid"), path, i)
        if _in_split(row, split, path, i):
            out.append(
                Example(
                    None,
                    str(row["question"]),
                    str(row["answer"]),
                    f"{row['ytid']}:{i}",
                    "mi",
                    None,
                    {"audio_ref": str(row["ytid"]), "kind": row.get("kind", row.get("question_type"))},
                )
            )
    return out


def read_musicqa(path: Path, split: str = "train") -> list[Example]:
    """MusicQA: a list of `{audio_name, conversation: [{from: human, value}, {from: gpt, value}]}`."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a MusicQA JSON list of {{audio_name, conversation}}")
    out = []
    for i, row in enumerate(data):
        _require(row, ("audio_name", "conversation"), path, i)
        turns = row["conversation"]
        if not (
            isinstance(turns, list) and len(turns) >= 2 and all(isinstance(t, dict) and "value" in t for t in turns[:2])
        ):
            raise DataError(f"{path}: item {i} needs a conversation of a human turn and a gpt turn")
        out.append(
            Example(
                None,
                str(turns[0]["value"]),
                str(turns[1]["value"]),
                f"{row['audio_name']}:{i}",
                "musicqa",
                RANDOM_CROP_SECONDS["musicqa"],
                {"audio_ref": str(row["audio_name"])},
            )
        )
    return out


def read_jsonl_qa(path: Path, split: str = "train") -> list[Example]:
    """Users' own data: JSONL with `audio`, `question` (may be empty or absent) and `answer`."""
    out = []
    for i, row in enumerate([row for _, row in iter_jsonl_objects(path)]):
        _require(row, ("audio", "answer"), path, i)
        question = row.get("question") or None
        crop = _crop_seconds(row.get("crop_seconds"), path, i)
        out.append(
            Example(
                None,
                question,
                str(row["answer"]),
                str(row.get("id", f"{Path(row['audio']).name}:{i}")),
                "jsonl",
                crop,
                {"audio_ref": str(row["audio"])},
            )
        )
    return out


def _crop_seconds(value: Any, path: Path, i: int) -> float | None:
    """A row's `crop_seconds`: absent, null or 0 = the full clip, else positive seconds."""
    if value in (None, "", 0):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (seconds > 0 and math.isfinite(seconds)) or isinstance(value, bool):
        raise DataError(f"{path}: item {i}: crop_seconds must be a positive number of seconds, not {value!r}")
    return seconds


# --- audio lookup ------------------------------------------------------------------------------


def find_audio(audio_dir: Path, ref: str, fmt: str) -> Path | None:
    """The file for one item: `{dir}/{ref}` as named, then `{ref}` plus an audio extension
    (MSD paths like `3/8/TR...clip` lack `.mp3`; MusicCaps/MI name clips `{ytid}.*`), then the
    same stem with another audio extension."""
    direct = Path(ref) if Path(ref).is_absolute() else audio_dir / ref
    if direct.is_file():
        return direct
    names = [direct.name + s for s in _AUDIO_SUFFIXES]
    if direct.suffix and fmt not in ("musiccaps", "mi"):
        names += [direct.stem + s for s in _AUDIO_SUFFIXES]
    for name in names:
        if direct.with_name(name).is_file():
            return direct.with_name(name)
    return None


# --- helpers -----------------------------------------------------------------------------------


def _in_split(row: dict, split: str, path: Path, index: int) -> bool:
    if split == "all":
        return True
    flag = row.get("is_audioset_eval")
    if flag is None:
        raise DataError(
            f"{path}: item {index} has no is_audioset_eval, so its split (train/test) is unknown; "
            "add the field, or train with --split all"
        )
    is_eval = flag if isinstance(flag, bool) else str(flag).strip().lower() == "true"
    return is_eval == (split == "test")


def _require(row: Any, keys: tuple[str, ...], path: Path, index: int) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{path}: item {index} is not an object")
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{path}: item {index} has no {', '.join(missing)} (keys: {', '.join(sorted(row))})")
