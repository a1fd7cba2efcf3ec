"""`musilingo eval --split muchomusic | mmau | mmau-music | mmar | mmar-music`: accuracy under each
benchmark's official rule (choice_rules.py), outputs that name no option counted and never guessed,
the benchmark's breakdowns, and exact random-choice and always-first-choice baselines.

Where the outputs come from:
- a benchmark file that carries them (`--predictions mmau-with-outputs.json --prediction-field
  model_output`): the choices and answers come from the same file;
- `ask`'s JSONL (or any records with `id`) joined by id with the benchmark file given as `--data`;
- `--model`: the split is answered through `ask` first (prompt: choice_data.prompt_for).
Every item of the split counts: an item without an output (missing, or failed in ask) is unanswered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.pipelines.evaluate import choice_rules as rules
from musilingo_cli.pipelines.evaluate.choice_data import (
    BREAKDOWNS,
    CHOICE_PROMPT,
    CHOICE_SPLITS,
    LETTERS,
    items_of,
    looks_like,
    read_records,
    write_choice_manifest,
)
from musilingo_cli.pipelines.evaluate.config import SHOWN, EvalConfig
from musilingo_cli.pipelines.evaluate.judge import judge_choices

# Where benchmark files keep outputs: MuChoMusic/MMAU examples `model_output`, MMAU's evaluation.py
# `model_prediction`, MMAR's `answer_prediction`; used when --prediction-field names a benchmark field.
OUTPUT_KEYS = ("model_output", "model_prediction", "answer_prediction")
OWN_FIELDS = {"id", "question", "choices", "answer", "prompt", "answers", "answer_orders", "audio_id", "audio_path"}


@dataclass
class Tally:
    """Counts over a set of items: n, correct, unanswered, no output, and the two exact baselines."""

    n: int = 0
    correct: int = 0
    unanswered: int = 0
    no_output: int = 0
    random_sum: float = 0.0
    first_correct: int = 0

    def add(self, judged: rules.Judged, has_output: bool, random_acc: float, first: bool) -> None:
        self.n += 1
        self.correct += judged.correct
        self.unanswered += judged.chosen == rules.UNANSWERED
        self.no_output += not has_output
        self.random_sum += random_acc
        self.first_correct += first

    def as_dict(self) -> dict[str, Any]:
        """accuracy, unanswered_rate and the baselines as fractions in [0, 1] (None when n is 0)."""
        n = self.n

        def share(x):
            return x / n if n else None

        return {
            "n": n,
            "correct": self.correct,
            "accuracy": share(self.correct),
            "unanswered": self.unanswered,
            "unanswered_rate": share(self.unanswered),
            "no_output": self.no_output,
            "random_choice": share(self.random_sum),
            "first_choice": share(self.first_correct),
        }


@dataclass
class ChoiceSystem:
    """One predictions file's result: totals, breakdowns (name -> value -> totals), notes."""

    name: str
    path: str
    totals: dict[str, Any]
    breakdowns: dict[str, dict[str, dict[str, Any]]]
    notes: list[str]
    per_item_path: str | None
    judge: dict[str, Any] | None = None


@dataclass
class ChoiceReport:
    """What `run_choice` returns: the split, its benchmark and rule, the prompt used with --model."""

    split: str
    benchmark: str
    rule: str
    systems: list[ChoiceSystem]
    prompt: str | None
    versions: dict[str, str] = field(default_factory=dict)
    unwritten_output: str | None = None  # "--output PATH (reason)" when the report could not be written


def score_outputs(
    items: list[rules.ChoiceItem], outputs: list[str | None]
) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]], list[rules.Judged]]:
    """Totals, breakdowns and per-item judgements of aligned items and outputs (None = no output)."""
    total = Tally()
    groups: dict[str, dict[str, Tally]] = {name: {} for name in BREAKDOWNS[items[0].benchmark]} if items else {}
    judged_all = []
    for item, output in zip(items, outputs):
        judged = rules.judge(item, output)
        judged_all.append(judged)
        args = (judged, output is not None, rules.random_choice_accuracy(item), rules.first_choice_correct(item))
        total.add(*args)
        for name, values in item.groups.items():
            for value in values:
                groups[name].setdefault(value, Tally()).add(*args)
    breakdowns = {
        name: {value: tally.as_dict() for value, tally in sorted(by_value.items())} for name, by_value in groups.items()
    }
    return total.as_dict(), breakdowns, judged_all


def _output(record: dict[str, Any], prediction_field: str) -> str | None:
    if record.get("error") is not None:
        return None
    value = record.get(prediction_field)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _outputs_for(path: Path, split: str, data_items, data_ids: set[str], prediction_field: str):
    """(items, outputs, notes) for one predictions file: a benchmark file with outputs, or records
    joined by id with `data_items` (the --data benchmark file)."""
    benchmark = CHOICE_SPLITS[split][0]
    records = read_records(path)
    if looks_like(records, benchmark):
        if prediction_field in OWN_FIELDS:  # e.g. the default "answer": MMAU's right answer, never an output
            found = [key for key in OUTPUT_KEYS if any(key in r for r in records)]
            if not found:
                raise DataError(
                    f"{path} carries no model outputs ({' / '.join(OUTPUT_KEYS)}); pass --prediction-field "
                    f"(it has {', '.join(sorted(records[0]))})"
                )
            prediction_field = found[0]
        pairs = items_of(records, split, path)
        items = [item for item, _ in pairs]
        outputs = [_output(record, prediction_field) for _, record in pairs]
        if all(o is None for o in outputs) and not any(prediction_field in r for _, r in pairs):
            raise DataError(
                f"{path} carries no {prediction_field!r} outputs; pass --prediction-field "
                f"(it has {', '.join(sorted(records[0]))})"
            )
        return items, outputs, []
    if data_items is None:
        raise ConfigError(
            f"{path} is not a {benchmark} file with outputs; "
            "pass the benchmark file as --data to join its answers by id"
        )
    by_id: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(records, 1):
        if record.get("id") is None:
            raise DataError(f"{path} record {number} has no 'id' to join with the {split} items")
        by_id[str(record["id"])] = record
    stray = [key for key in by_id if key not in data_ids]  # answers to the file's other items are ignored
    if stray:
        raise DataError(f"{path}: {len(stray)} answers match no item of --data, e.g. {', '.join(stray[:SHOWN])}")
    outputs = [_output(by_id[item.id], prediction_field) if item.id in by_id else None for item in data_items]
    absent = sum(item.id not in by_id for item in data_items)
    notes = [f"{absent} {split} items have no answer in this file and count as unanswered"] if absent else []
    return list(data_items), outputs, notes


def _write_per_item(path: Path, items, outputs, judged, config: EvalConfig) -> str | None:
    if not config.write_per_item:
        return None
    target = config.per_item or path.with_name(path.stem + ".scores.jsonl")
    with target.open("w", encoding="utf-8") as f:
        for item, output, j in zip(items, outputs, judged):
            row = {
                "id": item.id,
                "output": output,
                "chosen": None if j.chosen == rules.UNANSWERED else LETTERS[j.chosen],
                "chosen_text": None if j.chosen == rules.UNANSWERED else item.options[j.chosen],
                "answer": item.answer,
                "correct": j.correct,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(target)


def _answer_with_model(items: list[rules.ChoiceItem], config: EvalConfig) -> Path:
    from musilingo_cli.pipelines import ask

    answers = config.answers or Path(f"{config.split}.answers.jsonl")
    manifest = write_choice_manifest(items, config.audio_dir, answers.with_name(answers.stem + ".manifest.jsonl"))
    ask.run(ask.AskConfig(manifest=manifest, model=config.model, output=answers, **config.ask_options))
    return answers


def run_choice(config: EvalConfig, answers_split: bool) -> ChoiceReport:
    """Score every predictions file (and the model's answers with --model) on a multiple-choice split."""
    benchmark = CHOICE_SPLITS[config.split][0]
    data_items, data_ids = None, set()
    if config.data is not None:
        records = read_records(config.data)
        data_items = [item for item, _ in items_of(records, config.split, config.data)]
        data_ids = {item.id for item, _ in items_of(records, benchmark, config.data)}
    predictions = list(config.predictions)
    prompt = None
    if answers_split:
        if data_items is None:
            raise ConfigError(f"--model on {config.split} needs the benchmark file as --data")
        predictions.append(_answer_with_model(data_items, config))
        prompt = "the item's own 'prompt' field" if benchmark == "muchomusic" else CHOICE_PROMPT
    if not predictions:
        raise ConfigError("give --predictions FILE..., or --model with --data and --audio-dir")
    if config.per_item is not None and len(predictions) > 1:
        raise ConfigError("--per-item names one file; with several --predictions each gets <name>.scores.jsonl")
    systems = []
    for path in predictions:
        field_name = "answer" if answers_split and path == predictions[-1] else config.prediction_field
        items, outputs, notes = _outputs_for(Path(path), config.split, data_items, data_ids, field_name)
        totals, breakdowns, judged = score_outputs(items, outputs)
        failed = sum(o is None for o in outputs)
        if failed:
            notes.append(f"{failed} items have no output (missing or failed in ask): counted unanswered, not guessed")
        if benchmark != "muchomusic" and failed:
            official = totals["correct"] / (totals["n"] - failed) if totals["n"] > failed else None
            shown = "-" if official is None else f"{official:.4f}"
            notes.append(f"the official script skips items without output: its accuracy would be {shown}")
        if any(item.correct == rules.UNANSWERED for item in items):
            notes.append("some answers are not among their item's choices (as published); the rule still applies")
        per_item = _write_per_item(Path(path), items, outputs, judged, config)
        judge = judge_choices(items, outputs, config.judge_model, config.judge_base_url) if config.judge_model else None
        systems.append(ChoiceSystem(Path(path).stem, str(path), totals, breakdowns, notes, per_item, judge))
    return ChoiceReport(config.split, benchmark, rules.RULE_NAMES[benchmark], systems, prompt)
