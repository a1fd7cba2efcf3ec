"""`musilingo eval`: read answers and references, pair them, score them under one metric
profile, add a shuffled-reference floor and descriptive statistics, write the results.

`run` drives the steps; they live beside it: config.py (EvalConfig and result types), readers.py
(annotations, references, predictions, training captions), pairing.py (pairing and the floor),
answering.py (answering a split through `ask`), metrics.py (the profiles), report.py (tables,
markdown, CSV, JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

from musilingo_cli.core.console import progress
from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.model.hub import looks_like_path
from musilingo_cli.pipelines.evaluate import metrics
from musilingo_cli.pipelines.evaluate.answering import answer_items
from musilingo_cli.pipelines.evaluate.choice import ChoiceReport, run_choice
from musilingo_cli.pipelines.evaluate.choice_data import CHOICE_SPLITS
from musilingo_cli.pipelines.evaluate.config import (
    FORMATS,
    SHOWN,
    SPLITS,
    EvalConfig,
    EvalItem,
    EvalReport,
    SystemResult,
)
from musilingo_cli.pipelines.evaluate.judge import check_judge
from musilingo_cli.pipelines.evaluate.judge_score import judge_scores
from musilingo_cli.pipelines.evaluate.pairing import floor_references, pair
from musilingo_cli.pipelines.evaluate.readers import (
    load_split_items,
    read_predictions,
    read_references,
    read_train_captions,
)
from musilingo_cli.pipelines.evaluate.report import render_text
from musilingo_cli.pipelines.evaluate.sdd import SPLIT as SDD_SPLIT
from musilingo_cli.pipelines.evaluate.sdd import run_sdd


def _answers_split(config: EvalConfig) -> bool:
    """A model is named (a checkpoint, or --encoder with --llm for an untrained adapter)."""
    return config.model is not None or bool(config.ask_options.get("encoder") and config.ask_options.get("llm"))


def check_inputs(config: EvalConfig) -> None:
    """Refuse, before anything is loaded or the hub is asked, options that cannot work and local
    input files that do not exist (ConfigError / DataError, one line naming the option and the file)."""
    if config.profile not in metrics.PROFILES:
        raise ConfigError(f"unknown --profile {config.profile!r}; choose {' or '.join(metrics.PROFILES)}")
    if config.format not in FORMATS:
        raise ConfigError(f"unknown --format {config.format!r}; choose one of {', '.join(FORMATS)}")
    known = SPLITS + (SDD_SPLIT,) + tuple(CHOICE_SPLITS)
    if config.split is not None and config.split not in known:
        raise ConfigError(f"unknown --split {config.split!r}; choose one of {', '.join(known)}")
    if not config.predictions and not _answers_split(config):
        raise ConfigError(
            "give --predictions FILE..., or --split with --model and --audio-dir to answer the split first"
        )
    if _answers_split(config) and (config.split is None or config.audio_dir is None):
        raise ConfigError("--model needs --split and --audio-dir")
    if config.per_item is not None and len(config.predictions) > 1 and config.per_item.suffix:
        raise ConfigError(
            f"--per-item {config.per_item} names one file, but there are {len(config.predictions)} predictions "
            "files: pass a folder (each gets <name>.scores.jsonl in it)"
        )
    if config.bertscore and config.bertscore_model != "roberta-large" and config.bertscore_layers is None:
        raise ConfigError(f"--bertscore-model {config.bertscore_model} needs --bertscore-layers N")
    local = looks_like_path(config.bertscore_model)
    if config.bertscore and local and not Path(config.bertscore_model).expanduser().is_dir():
        raise DataError(f"--bertscore-model {config.bertscore_model}: no such model folder; check the path")
    given = [("--predictions", p) for p in config.predictions] + [
        (option, path)
        for option, path in (
            ("--references", config.references),
            ("--data", config.data),
            ("--audio-dir", config.audio_dir),
            ("--train-captions", config.train_captions),
        )
        if path is not None
    ]
    for option, path in given:
        if not Path(path).expanduser().exists():
            raise DataError(f"{option} {path}: no such file or folder; check the path")
    _check_outputs(config, given)


def _check_outputs(config: EvalConfig, inputs: list[tuple[str, Path | str]]) -> None:
    """Refuse, before minutes of scoring, output files that cannot be written or would overwrite an
    input or each other (ConfigError, one line naming both options)."""
    outputs = [("--output", config.output), ("--plot", config.plot)]
    if config.write_per_item and config.per_item is not None and not _per_item_is_folder(config):
        outputs.append(("--per-item", config.per_item))
    taken = {Path(path).expanduser().resolve(): option for option, path in inputs}
    for option, path in outputs:
        if path is None:
            continue
        _check_writable(option, Path(path))
        target = Path(path).expanduser().resolve()
        if target in taken:
            raise ConfigError(
                f"{option} {path} is also {taken[target]}: writing it would destroy that file; choose another"
            )
        taken[target] = option
    if config.plot is not None:
        _check_plot_suffix(Path(config.plot))


def _check_writable(option: str, path: Path) -> None:
    """An output path that names a folder or lies in a missing one (ConfigError)."""
    if path.is_dir():
        example = path / ("eval.png" if option == "--plot" else "eval.md")
        raise ConfigError(f"{option} {path} is a folder: give a file name in it, e.g. {example}")
    parent = path.expanduser().absolute().parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option} {path}: {path.parent} is not a folder")
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: the folder {path.parent} does not exist; create it first")


def _check_plot_suffix(path: Path) -> None:
    """matplotlib picks the format from the suffix (and silently appends .png to a name without one)."""
    known = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "tif", "tiff", "webp", "eps", "ps")
    if path.suffix.lower().lstrip(".") not in known:
        raise ConfigError(f"--plot {path}: give a picture file name ending in .png, .pdf or .svg, e.g. eval.png")


def run(config: EvalConfig) -> EvalReport | ChoiceReport:
    """Answer the split if asked, score every predictions file, write per-item scores and --output.

    Multiple-choice splits (muchomusic, mmau[-music], mmar[-music]) return a ChoiceReport (choice.py)."""
    check_inputs(config)
    if config.judge_model:  # an unreachable judge or a missing key is one line before any work, not N failed items
        check_judge(config.judge_model, config.judge_base_url)
    if config.split in CHOICE_SPLITS:
        report = run_choice(config, _answers_split(config))
        _write_output(report, config)
        return report
    if config.split == SDD_SPLIT:  # Song Describer: every caption of a track is a reference (sdd.py)
        report = run_sdd(config, _answers_split(config))
        _write_output(report, config)
        return report
    references = None
    if config.references is not None:
        references = read_references(config.references, config.reference_field, config.split)
    elif config.split is not None:
        references = load_split_items(config.split, config.data, config.hub_cache_dir)
    predictions = list(config.predictions)
    if _answers_split(config):
        predictions.append(answer_items(references, config))
    train = read_train_captions(config.train_captions) if config.train_captions else None
    bert = (
        metrics.BertScoreSpec(config.bertscore_model, config.bertscore_layers, config.bertscore_batch_size)
        if config.bertscore
        else None
    )
    floors: dict[tuple, tuple[dict, list[str]]] = {}
    systems = []
    with progress(transient=True) as bar:  # on stderr: BERTScore and METEOR over thousands of items take minutes
        task = bar.add_task("scoring", total=len(predictions), status="")
        for path in predictions:
            bar.update(task, status=Path(path).name)
            systems.append(_score_file(path, references, config, bert, train, floors))
            bar.advance(task)
    report = EvalReport(config.profile, systems, metrics.library_versions(), _data_sources(config), config.seed)
    _write_output(report, config)
    return report


def _write_output(report, config: EvalConfig) -> None:
    if config.plot is not None:
        from musilingo_cli.pipelines.evaluate.plot import write_plot  # lazy: matplotlib only with --plot

        write_plot(report, config.plot)
    if config.output is not None:
        fmt = "markdown" if config.format == "table" else config.format
        try:
            config.output.write_text(render_text(report, fmt), encoding="utf-8")
        except OSError as err:  # the scores are computed: the caller still shows them, then says so
            report.unwritten_output = f"{config.output} ({err.strerror or type(err).__name__})"


def _data_sources(config: EvalConfig) -> dict[str, str]:
    from musilingo_cli.pipelines.evaluate import nltk_data

    sources = {}
    if nltk_data._wordnet_source:
        sources["wordnet"] = nltk_data._wordnet_source
    if nltk_data._punkt_source:
        sources["punkt_tab"] = nltk_data._punkt_source
    return sources


def _score_file(path: Path, references: list[EvalItem] | None, config: EvalConfig, bert, train, floors) -> SystemResult:
    preds = read_predictions(path, config.prediction_field, config.reference_field)
    preds, paired, unanswered = pair(preds, references, str(path))
    refs = [r.reference for r in paired]
    empty_refs = [p.id or str(i) for i, (p, r) in enumerate(zip(preds, refs), 1) if not r.strip()]
    if empty_refs:
        raise DataError(
            f"{len(empty_refs)} references are empty, e.g. {', '.join(empty_refs[:SHOWN])}; fix the references file"
        )
    answers = [p.answer for p in preds]
    floor, floor_refs, fallback = None, None, 0
    if config.floor and len(preds) > 1:
        questions = [r.question or "" for r in paired]
        key = (tuple(questions), tuple(refs))
        if key in floors:
            result = metrics.score(answers, refs, config.profile, bert)
        else:  # the model's row and the floor in one pass (shared tokenisation, all cores)
            floor_refs, fallback = floor_references(questions, refs, config.seed)
            result, floor_result = metrics.score_rows([answers, floor_refs], refs, config.profile, bert)
            floors[key] = (floor_result.scores, floor_refs, fallback)
        floor, floor_refs, fallback = floors[key]
    else:
        result = metrics.score(answers, refs, config.profile, bert)
    counts = {
        "n": len(preds),
        "empty": sum(1 for p in preds if not p.failed and not p.answer.strip()),
        "failed": sum(1 for p in preds if p.failed),
        "unanswered": unanswered,
        "floor_fallback": fallback,
    }
    notes = list(result.notes)
    if counts["failed"]:
        notes.append(f"{counts['failed']} answers failed in ask and are scored as empty answers")
    if unanswered:
        notes.append(f"{unanswered} references have no answer in this file and are not scored")
    judge = None
    if config.judge_model:  # beside the metrics, never instead of them; failed answers are empty ones
        questions = [r.question for r in paired]
        judge, values = judge_scores(questions, [[r] for r in refs], answers, config.judge_model, config.judge_base_url)
        for item, value in zip(result.per_item, values):
            item["judge_score"] = value
    per_item_path = _write_per_item(path, preds, refs, result, floor_refs, config)
    return SystemResult(
        path.stem,
        str(path),
        result.scores,
        floor,
        counts,
        metrics.descriptive_stats(answers, train),
        notes,
        result.signatures,
        per_item_path,
        judge,
    )


def _per_item_is_folder(config: EvalConfig) -> bool:
    """--per-item names a folder (each predictions file gets <name>.scores.jsonl in it), not one file."""
    return len(config.predictions) > 1 or config.per_item.is_dir()


def _write_per_item(path: Path, preds, refs, result, floor_refs, config: EvalConfig) -> str | None:
    # Only where asked: eval writes nothing beside the user's inputs.
    if not config.write_per_item or config.per_item is None:
        return None
    target = config.per_item
    if _per_item_is_folder(config):
        target.mkdir(parents=True, exist_ok=True)
        target = target / (path.stem + ".scores.jsonl")
    rows = []
    for index, (p, ref, scores) in enumerate(zip(preds, refs, result.per_item)):
        status = "failed" if p.failed else ("empty" if not p.answer.strip() else "ok")
        row = {
            "id": p.id,
            "audio": p.audio,
            "question": p.question,
            "answer": p.answer,
            "reference": ref,
            "status": status,
            "profile": config.profile,
            **scores,
        }
        if floor_refs is not None:
            row["floor_reference"] = floor_refs[index]
        rows.append(json.dumps(row, ensure_ascii=False))
    try:
        target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    except OSError as err:
        from musilingo_cli.core.console import warn

        warn(f"per-item scores not written to {target} ({err.strerror}); pass --per-item FILE")
        return None
    return str(target)
