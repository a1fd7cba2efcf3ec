"""Configuration and result types of `musilingo eval`: EvalConfig (the options), EvalItem (one test
question with its reference), SystemResult (one predictions file's scores) and EvalReport (what `run`
returns), with the split names, output formats and hub locations they refer to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("mi-short", "mi-long", "musicqa", "musiccaps")
FORMATS = ("table", "markdown", "csv", "json")
# Where each split's annotations live on the Hugging Face hub (repo, candidate file paths).
HUB_FILES = {
    "mi-short": ("m-a-p/Music-Instruct", ("MusicInstruct/music_instruct_short.json",)),
    "mi-long": ("m-a-p/Music-Instruct", ("MusicInstruct/music_instruct_long.json",)),
    "musicqa": ("mu-llama/MusicQA", ("EvalMusicQA.json", "MusicQA/EvalMusicQA.json")),
    "musiccaps": ("google/MusicCaps", ("musiccaps-public.csv",)),
}
SHOWN = 5  # how many offending ids an error message lists


@dataclass
class EvalItem:
    """One test question: what to ask (audio, question) and the reference answer."""

    id: str | None
    audio: str | None
    question: str | None
    reference: str


@dataclass
class EvalConfig:
    """Everything `musilingo eval` needs; see docs/eval.md for each option."""

    predictions: list[Path] = field(default_factory=list)
    references: Path | None = None
    split: str | None = None
    data: Path | None = None
    model: str | None = None
    audio_dir: Path | None = None
    answers: Path | None = None
    ask_options: dict[str, Any] = field(default_factory=dict)  # AskConfig fields for answering the split
    profile: str = "standard"
    prediction_field: str = "answer"
    reference_field: str = "reference"
    bertscore: bool = True
    bertscore_model: str = "roberta-large"
    bertscore_layers: int | None = None
    bertscore_batch_size: int = 64
    floor: bool = True
    seed: int = 0
    train_captions: Path | None = None
    format: str = "table"
    output: Path | None = None
    per_item: Path | None = None
    write_per_item: bool = True
    hub_cache_dir: Path | None = None
    plot: Path | None = None  # --plot FILE.png (plot.py)
    judge_model: str | None = None  # LLM judge: choice extraction (judge.py), else a 0-5 score (judge_score.py)
    judge_base_url: str | None = None
    sdd_all_tracks: bool = False  # --split sdd: every track, not only the valid subset (sdd.py)


@dataclass
class SystemResult:
    """The scores of one predictions file, with its floor, counts and statistics."""

    name: str
    path: str
    scores: dict[str, float | None]
    floor: dict[str, float | None] | None
    counts: dict[str, int]
    stats: dict[str, Any]
    notes: list[str]
    signatures: dict[str, str]
    per_item_path: str | None
    judge: dict[str, Any] | None = None  # --judge-model: the LLM judge score's summary (judge_score.py)


@dataclass
class EvalReport:
    """What `run` returns: one SystemResult per predictions file plus the shared header facts."""

    profile: str
    systems: list[SystemResult]
    versions: dict[str, str]
    data_sources: dict[str, str]
    seed: int
    unwritten_output: str | None = None  # "--output PATH (reason)" when the report could not be written
