"""`musilingo eval`: score answers against references under a named metric profile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from musilingo_cli.commands import options
from musilingo_cli.commands.options import output_format
from musilingo_cli.core.console import echo, stderr
from musilingo_cli.core.errors import DataError, require_extra


def command(
    more_predictions: Optional[list[Path]] = typer.Argument(
        None, metavar="[FILE]...", help="More answers files, so that `--predictions a.jsonl b.jsonl` scores both."
    ),
    predictions: Optional[list[Path]] = typer.Option(
        None,
        "--predictions",
        "-p",
        metavar="FILE",
        help="Answers file(s) to score (JSONL from `ask`, or a JSON list / JSONL from another system). Repeat or list "
        "several to compare side by side.",
    ),
    references: Optional[Path] = typer.Option(
        None,
        "--references",
        "-r",
        help="References: Music Instruct / MusicQA JSON, MusicCaps CSV, or a JSON list / JSONL with "
        "--reference-field. Default: the split's annotations, else references inside the predictions.",
    ),
    split: Optional[str] = typer.Option(
        None,
        "--split",
        help="mi-short, mi-long, musicqa, musiccaps or sdd (Song Describer, --data song_describer.csv, all captions of "
        "a track as references): its test items are the references (and are answered first with --model). "
        "Multiple choice: muchomusic, mmau, mmau-music, mmar or mmar-music, scored by the benchmark's official rule.",
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", help="The split's annotations file instead of the Hugging Face hub copy."
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="Checkpoint or official release (short, long, musicqa) to answer the split with `musilingo ask` before "
        "scoring.",
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help="With --model: replace its audio encoder (hub id or directory)."
    ),
    llm: Optional[str] = typer.Option(None, "--llm", help="With --model: replace its LLM (hub id or directory)."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help="With --model: load the LLM in 8bit or 4bit (NF4) through bitsandbytes."
    ),
    preset: str = typer.Option(
        "official",
        "--preset",
        help="How the split is answered: official (sampling, T=0.1, top-p 0.5, as the paper) or greedy.",
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Answer length limit (default 300, as the official code)."
    ),
    device: Optional[str] = options.DEVICE,
    dtype: Optional[str] = options.DTYPE,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Items generated at once."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", help="Audio of the split (with --model)."),
    answers: Optional[Path] = typer.Option(
        None, "--answers", help="Where --model writes its answers (resumable). Default: <split>.answers.jsonl."
    ),
    profile: str = typer.Option(
        "standard",
        "--profile",
        help="standard (corpus word BLEU, F1; LP-MusicCaps-comparable) or musilingo-paper (replicates MusiLingo's "
        "qa.py).",
    ),
    prediction_field: str = typer.Option(
        "answer",
        "--prediction-field",
        help="Field holding the answer text (LP-MusicCaps inference.json: prediction; benchmark files: model_output).",
    ),
    reference_field: str = typer.Option(
        "reference",
        "--reference-field",
        help="Field holding the reference text (LP-MusicCaps inference.json: ground_truth).",
    ),
    no_bertscore: bool = typer.Option(False, "--no-bertscore", help="Skip BERTScore."),
    bertscore_model: str = typer.Option(
        "roberta-large", "--bertscore-model", help="roberta-large (hub cache) or a local model directory."
    ),
    bertscore_layers: Optional[int] = typer.Option(
        None,
        "--bertscore-layers",
        help="Hidden layer for BERTScore (17 for roberta-large; required with a local model).",
    ),
    bertscore_batch_size: int = typer.Option(64, "--bertscore-batch-size", help="BERTScore batch size."),
    no_floor: bool = typer.Option(False, "--no-floor", help="Skip the shuffled-reference floor."),
    seed: int = typer.Option(0, "--seed", help="Seed of the floor's shuffle."),
    train_captions: Optional[Path] = typer.Option(
        None,
        "--train-captions",
        help="Training captions for novelty and vocab diversity (.txt lines, MusicCaps CSV train rows, or JSON).",
    ),
    format: str = typer.Option("table", "--format", help="table (rich, stdout), markdown, csv or json."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (same as --format json)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Also write the results to this file (markdown for 'table')."
    ),
    per_item: Optional[Path] = typer.Option(
        None,
        "--per-item",
        help="Also write per-item scores: this JSONL file, or with several predictions files this folder (each "
        "gets <name>.scores.jsonl). Default: none; eval writes nothing beside your inputs.",
    ),
    no_per_item: bool = typer.Option(False, "--no-per-item", help="Do not write per-item scores."),
    judge_model: Optional[str] = typer.Option(
        None,
        "--judge-model",
        help="Also ask this LLM judge (key from OPENAI_API_KEY): multiple choice, which option each output names; "
        "captions and open answers, a 0-5 score with the pinned prompt eval_judge_score_v1. Reported beside the "
        "official metrics, never instead of them.",
    ),
    judge_base_url: Optional[str] = typer.Option(
        None,
        "--judge-base-url",
        help="OpenAI-compatible server of --judge-model (default: OPENAI_BASE_URL, else OpenAI).",
    ),
    sdd_all_tracks: bool = typer.Option(
        False,
        "--sdd-all-tracks",
        help="--split sdd: score every track, not only the valid subset (is_valid_subset).",
    ),
    plot: Optional[Path] = typer.Option(
        None,
        "--plot",
        metavar="FILE.png",
        help="Also draw the results: main metrics against the floor, or accuracy per category against the baselines.",
    ),
) -> None:
    """Score answers with BLEU-1..4, METEOR, ROUGE-L and BERTScore under a named profile, with a floor."""
    format = output_format(format, ("table", "markdown", "csv", "json"), as_json)
    require_extra(
        "eval", "nltk", "rouge_score", "sacrebleu", *(() if no_bertscore else ("bert_score",)), what="musilingo eval"
    )
    # imported here, not at the top: keeps `musilingo --help` and option errors fast (torch)
    from musilingo_cli.core.console import results_only_on_stdout, stdout
    from musilingo_cli.model.hub import go_offline_if_unreachable
    from musilingo_cli.pipelines import evaluate

    config = evaluate.EvalConfig(
        predictions=list(predictions or []) + list(more_predictions or []),
        references=references,
        split=split,
        data=data,
        model=model,
        audio_dir=audio_dir,
        answers=answers,
        profile=profile,
        prediction_field=prediction_field,
        reference_field=reference_field,
        bertscore=not no_bertscore,
        bertscore_model=bertscore_model,
        bertscore_layers=bertscore_layers,
        bertscore_batch_size=bertscore_batch_size,
        floor=not no_floor,
        seed=seed,
        train_captions=train_captions,
        format=format,
        output=output,
        per_item=per_item,
        write_per_item=not no_per_item,
        plot=plot,
        sdd_all_tracks=sdd_all_tracks,
        judge_model=judge_model,
        judge_base_url=judge_base_url,
        ask_options={
            "encoder": encoder,
            "llm": llm,
            "preset": preset,
            "max_new_tokens": max_new_tokens,
            "device": device,
            "dtype": dtype,
            "batch_size": batch_size,
            "seed": seed,
            "quantize": quantize,
        },
    )
    evaluate.check_inputs(config)  # a typo in a local path is said before the hub is probed
    hub_specs = [] if no_bertscore else [bertscore_model]
    if split and data is None:
        hub_specs.append(None)  # the split's annotations come from the hub
    if model:
        hub_specs += [model, encoder, llm]
    go_offline_if_unreachable(hub_specs)
    with results_only_on_stdout():
        report = evaluate.run(config)
        if format == "table":
            stdout.print(evaluate.rich_table(report))
        else:
            echo(evaluate.render_text(report, format), nl=False)
    if plot is not None:  # stdout carries the results only; where the files went is said on stderr
        stderr.print(f"plot written to {plot}", markup=False)
    if report.unwritten_output:
        raise DataError(
            f"the report above could not be written to --output {report.unwritten_output}; pass another --output"
        )
