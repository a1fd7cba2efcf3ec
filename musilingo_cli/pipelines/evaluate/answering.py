"""Answering a split through `musilingo ask` (the --model path of `musilingo eval`): the split is
written as an ask manifest with each item's audio resolved under --audio-dir, then ask answers it
into a resumable answers file."""

from __future__ import annotations

import json
from pathlib import Path

from musilingo_cli.pipelines.evaluate.config import EvalConfig, EvalItem


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
