"""Rendering an EvalReport: the rich table for stdout, and markdown, CSV and JSON text, each headed
by the profile, metric signatures, library versions, data sources and the floor's seed."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from musilingo_cli.pipelines.evaluate import choice_report, metrics
from musilingo_cli.pipelines.evaluate.choice import ChoiceReport
from musilingo_cli.pipelines.evaluate.config import EvalReport

STAT_ROWS = (
    ("vocab_size", "vocab size"),
    ("type_token_ratio", "type/token ratio"),
    ("vocab_diversity", "vocab diversity (vs train)"),
    ("novel_vocab", "novel vocab (vs train)"),
    ("novel_captions", "novel captions (vs train)"),
    ("length_mean", "length mean (words)"),
    ("length_std", "length std (words)"),
)
COUNT_ROWS = (
    ("n", "items scored"),
    ("empty", "empty answers"),
    ("failed", "failed in ask (scored empty)"),
    ("unanswered", "references without answer"),
    ("floor_fallback", "floor: unique question, random ref"),
)


def _has_floor(report: EvalReport) -> bool:
    """Some system was scored against a floor (not so with --no-floor)."""
    return any(system.floor is not None for system in report.systems)


def header_lines(report: EvalReport) -> list[str]:
    """Profile, signatures, library versions and data sources: printed above every table."""
    lines = [f"profile: {metrics.DESCRIPTIONS[report.profile]}"]
    signatures = {}
    for system in report.systems:
        signatures.update(system.signatures)
    for name, signature in signatures.items():
        lines.append(f"{name} signature: {signature}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    if report.data_sources:
        lines.append("data: " + ", ".join(f"{k} from {v}" for k, v in report.data_sources.items()))
    if _has_floor(report):
        lines.append(
            f"floor: each item answered with the reference of another item with the same question (seed {report.seed})"
        )
    lines += judge_lines(report)
    return lines


def judge_lines(report: EvalReport) -> list[str]:
    """What the judge score is (label, model, pinned prompt) and each system's distribution and misses."""
    judged = [s for s in report.systems if s.judge]
    if not judged:
        return []
    first = judged[0].judge
    lines = [
        f"judge score: {first['label']}; judge {first['model']}, prompt {first['prompt']} "
        f"(sha256 {first['prompt_sha256'][:12]}); beside the metrics above, never instead of them"
    ]
    for s in judged:
        spread = " ".join(f"{k}:{v}" for k, v in s.judge["distribution"].items())
        lines.append(
            f"judge score ({s.name}): distribution {spread}; {s.judge['scored']} of {s.judge['n']} scored, "
            f"{s.judge['empty']} empty (0 by the rubric), {s.judge['unparseable']} unparseable replies, "
            f"{s.judge['failed']} failed requests (neither in the mean)"
        )
    return lines


def _columns(report: EvalReport) -> list[tuple[str, dict, dict]]:
    """(title, scores, extra) per column: each system, then its floor (one floor if all share it)."""
    columns = []
    floors = [s.floor for s in report.systems]
    shared = all(f == floors[0] for f in floors)
    for system in report.systems:
        judge = {"judge_mean": system.judge["mean"]} if system.judge else {}
        columns.append((system.name, system.scores, {**system.counts, **system.stats, **judge}))
        if system.floor is not None and not shared:
            columns.append((f"floor ({system.name})", system.floor, {}))
    if shared and floors and floors[0] is not None:
        columns.append(("floor", floors[0], {"floor_fallback": report.systems[0].counts["floor_fallback"]}))
    return columns


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def table_rows(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """The table as header + rows of strings (shared by rich, markdown and csv)."""
    columns = _columns(report)
    labels = metrics.LABELS[report.profile]
    header = ["metric"] + [title for title, _, _ in columns]
    rows = []
    for key in metrics.METRIC_KEYS:
        if report.profile == "musilingo-paper" and key in ("bleu1", "bleu2", "bleu3"):
            continue  # qa.py computes no BLEU-1..3; JSON keeps them as null
        rows.append([labels[key]] + [_cell(scores.get(key)) for _, scores, _ in columns])
    if any(s.judge for s in report.systems):  # the floor is not judged: "-" in its column
        rows.append(["LLM judge score (0-5, mean)"] + [_cell(extra.get("judge_mean")) for _, _, extra in columns])
    floored = _has_floor(report)
    for key, label in COUNT_ROWS + STAT_ROWS:
        if key != "floor_fallback" or floored:  # --no-floor: no floor, so no floor row
            rows.append([label] + [_cell(extra.get(key)) for _, _, extra in columns])
    return header, rows


def _notes(report: EvalReport) -> list[str]:
    return [f"{s.name}: {note}" for s in report.systems for note in s.notes]


def rich_table(report: EvalReport):
    """A rich Table for stdout, titled with the profile and captioned with signatures and versions."""
    if isinstance(report, ChoiceReport):
        return choice_report.rich_table(report)
    header, rows = table_rows(report)
    caption = header_lines(report) + _notes(report)
    return choice_report.make_table(f"musilingo eval - profile {report.profile}", caption, header, rows)


def report_json(report: EvalReport) -> list[dict[str, Any]]:
    """One object per predictions file: METRIC_KEYS (0-1), profile, n, floor, counts, stats, versions."""
    out = []
    for s in report.systems:
        out.append(
            {
                "predictions": s.path,
                **s.scores,
                "profile": report.profile,
                "n": s.counts["n"],
                "floor": s.floor,
                "counts": s.counts,
                "stats": s.stats,
                "notes": s.notes,
                "signatures": s.signatures,
                "versions": report.versions,
                "data": report.data_sources,
                "seed": report.seed,
                "per_item": s.per_item_path,
                "judge_score": s.judge,  # null without --judge-model; never one of the metrics above
            }
        )
    return out


def render_text(report: EvalReport, fmt: str) -> str:
    """The report as markdown, csv or json text."""
    if isinstance(report, ChoiceReport):
        return choice_report.render_text(report, fmt)
    if fmt == "json":
        return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"
    header, rows = table_rows(report)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        pad = [""] * (len(header) - 2)
        writer.writerow(["profile", metrics.DESCRIPTIONS[report.profile]] + pad)
        writer.writerow(["versions", "; ".join(f"{k} {v}" for k, v in report.versions.items())] + pad)
        return buffer.getvalue()
    lines = [f"- {line}" for line in header_lines(report) + _notes(report)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
