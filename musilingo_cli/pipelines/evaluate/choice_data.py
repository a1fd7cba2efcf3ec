"""Readers of the multiple-choice benchmarks' own published files, the prompts the model is asked
with, and the `ask` manifest that answers a split through `--model`.

- MuChoMusic: the JSON list `prepare_prompts.py` writes (`id`, `prompt`, `answers`, `answer_orders`,
  `dataset`, `genre`, `reasoning`, `knowledge`, `audio_path`, then the model's `model_output`).
  Its `id` is the track's id (several questions share it), so an item's id here is `{id}:{position}`.
- MMAU: `mmau-test-mini.json` (`id`, `audio_id`, `question`, `choices`, `answer`, `task`, `category`,
  `sub-category`, `difficulty`); `mmau-music` keeps `task == "music"` (334 of the 1,000 items).
- MMAR: `MMAR-meta.jsonl` (`id`, `audio_path`, `question`, `choices`, `answer`, `modality`,
  `category`, `sub-category`, ...); `mmar-music` keeps `modality == "music"` (206 items; the mixes
  with music are in `mmar`, broken down by modality).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import DataError
from musilingo_cli.pipelines.evaluate.choice_rules import UNANSWERED, ChoiceItem
from musilingo_cli.pipelines.evaluate.readers import _read_json_or_jsonl, _records

# split -> (benchmark, field that selects the music part, its value)
CHOICE_SPLITS: dict[str, tuple[str, str | None, str | None]] = {
    "muchomusic": ("muchomusic", None, None),
    "mmau": ("mmau", None, None),
    "mmau-music": ("mmau", "task", "music"),
    "mmar": ("mmar", None, None),
    "mmar-music": ("mmar", "modality", "music"),
}
# Breakdowns each benchmark reports (MuChoMusic: evaluate.py; MMAU: evaluation.py; MMAR: evaluation.py).
BREAKDOWNS = {
    "muchomusic": ("reasoning", "knowledge", "genre"),
    "mmau": ("task", "category", "sub-category", "difficulty"),
    "mmar": ("modality", "category", "sub-category"),
}
WHERE = {
    "muchomusic": "run MuChoMusic's prepare_prompts.py (github.com/mulab-mir/muchomusic) or get it from "
    "HF mulab-mir/muchomusic",
    "mmau": "mmau-test-mini.json from github.com/Sakshi113/MMAU (or HF gamma-lab-umd/MMAU-test-mini)",
    "mmar": "MMAR-meta.jsonl from github.com/ddlBoJack/MMAR (audio: HF BoJack/MMAR)",
}
REQUIRED = {
    "muchomusic": ("prompt", "answers", "answer_orders"),
    "mmau": ("question", "choices", "answer"),
    "mmar": ("question", "choices", "answer"),
}
# How MMAU/MMAR items are asked (their repos publish no single prompt): question, then lettered choices,
# asking for the option's text because their rule matches text. MuChoMusic items carry their own prompt.
CHOICE_PROMPT = "{question}\nOptions:\n{options}\nAnswer with the text of the correct option."
LETTERS = "ABCDEFGHIJ"


def looks_like(records: list[dict[str, Any]], benchmark: str) -> bool:
    """Whether records carry a benchmark's question fields (a benchmark file, maybe with outputs)."""
    return bool(records) and all(all(key in r for key in REQUIRED[benchmark]) for r in records)


def _list_of_str(value: Any, where: str, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {name!r} must be a list of strings")
    return value


def _group(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def item_from_record(record: dict[str, Any], benchmark: str, position: int, where: str) -> ChoiceItem:
    """One ChoiceItem from a benchmark record (fields as the benchmark publishes them)."""
    missing = [key for key in REQUIRED[benchmark] if key not in record]
    if missing:
        raise DataError(
            f"{where} has no {', '.join(map(repr, missing))}: not a {benchmark} record ({WHERE[benchmark]})"
        )
    groups = {name: _group(record.get(name)) for name in BREAKDOWNS[benchmark]}
    if benchmark == "muchomusic":
        options = _list_of_str(record["answers"], where, "answers")
        orders = record["answer_orders"]
        if not isinstance(orders, list) or 0 not in orders or len(orders) != len(options):
            raise DataError(f"{where}: 'answer_orders' must list each option's original index, 0 = the right one")
        return ChoiceItem(
            id=f"{record.get('id')}:{position}",
            benchmark=benchmark,
            question=str(record["prompt"]),
            options=options,
            correct=orders.index(0),
            answer=options[orders.index(0)],
            audio=None if record.get("audio_path") is None else str(record["audio_path"]),
            prompt=str(record["prompt"]),
            groups=groups,
        )
    options = _list_of_str(record["choices"], where, "choices")
    answer = str(record["answer"])
    audio = record.get("audio_id") if benchmark == "mmau" else record.get("audio_path")
    return ChoiceItem(
        id=str(record.get("id", position)),
        benchmark=benchmark,
        question=str(record["question"]),
        options=options,
        correct=options.index(answer) if answer in options else UNANSWERED,
        answer=answer,
        audio=None if audio is None else str(audio),
        prompt=None,
        groups=groups,
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """The objects of a benchmark JSON list or JSONL file."""
    return _records(_read_json_or_jsonl(path), path)


def items_of(records: list[dict[str, Any]], split: str, path: Path) -> list[tuple[ChoiceItem, dict[str, Any]]]:
    """The split's items with their records (the music part for *-music splits), in file order."""
    benchmark, field, value = CHOICE_SPLITS[split]
    out = []
    for position, record in enumerate(records):
        item = item_from_record(record, benchmark, position, f"{path} record {position + 1}")
        if field is None or record.get(field) == value:
            out.append((item, record))
    if not out:
        raise DataError(f"{path} holds no {split} items (none has {field} = {value!r})")
    return out


def prompt_for(item: ChoiceItem) -> str:
    """What the model is asked: MuChoMusic's prepared prompt as is; MMAU/MMAR: CHOICE_PROMPT."""
    if item.prompt is not None:
        return item.prompt
    options = "\n".join(f"({LETTERS[i]}) {option}" for i, option in enumerate(item.options))
    return CHOICE_PROMPT.format(question=item.question, options=options)


def resolve_choice_audio(audio_dir: Path, audio: str) -> Path:
    """An item's audio under `audio_dir`: the benchmark's relative path (`./test-mini-audios/x.wav`,
    `data/sdd/audio/...`), else the file name anywhere below `audio_dir`, else the relative path (a
    missing file becomes an error record in ask, counted as no output)."""
    relative = Path(audio.removeprefix("./"))
    for candidate in (audio_dir / relative, audio_dir / relative.name):
        if candidate.is_file():
            return candidate.resolve()
    matches = sorted(audio_dir.rglob(relative.name))
    return matches[0].resolve() if matches else audio_dir / relative


def write_choice_manifest(items: list[ChoiceItem], audio_dir: Path, path: Path) -> Path:
    """The items as an `ask` manifest (JSONL `{"id", "path", "question"}`), question = prompt_for(item)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            if item.audio is None:
                raise DataError(f"item {item.id} names no audio file; --model needs each item's audio")
            row = {
                "id": item.id,
                "path": str(resolve_choice_audio(audio_dir, item.audio)),
                "question": prompt_for(item),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
