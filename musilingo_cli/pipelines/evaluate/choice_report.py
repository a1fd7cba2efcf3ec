"""Rendering a ChoiceReport: rows of accuracy, unanswered outputs and each breakdown, one column per
predictions file beside the exact random-choice and always-first-choice baselines; markdown, CSV,
JSON and the rich table, each headed by the benchmark's rule."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from musilingo_cli.pipelines.evaluate.choice import ChoiceReport


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def header_lines(report: ChoiceReport) -> list[str]:
    """The split, its rule, how outputs that name no option are treated, and the prompt."""
    lines = [
        f"split: {report.split} ({len(report.systems)} file(s)); accuracy in %",
        f"rule: {report.rule}",
        "unanswered: outputs that name no option under the rule; never guessed, scored wrong",
        "baselines: exact expectation of a uniformly random option, and always the first option shown",
    ]
    if report.prompt:
        lines.append(f"prompt with --model: {report.prompt!r}")
    for system in report.systems:
        if system.judge:
            lines.append(f"judge ({system.name}): {system.judge['model']} - {system.judge['prompt']!r}")
    return lines


def _shared_baselines(report: ChoiceReport) -> bool:
    keys = ("random_choice", "first_choice")
    first = report.systems[0]
    return all(
        all(s.totals[k] == first.totals[k] for k in keys) and s.breakdowns.keys() == first.breakdowns.keys()
        for s in report.systems
    )


def table_rows(report: ChoiceReport) -> tuple[list[str], list[list[str]]]:
    """Header + rows: totals, then `name: value` breakdown rows (accuracy, n in the label)."""
    shared = _shared_baselines(report)
    header = ["metric"]
    for s in report.systems:
        header.append(s.name)
        if not shared:
            header += [f"random ({s.name})", f"first ({s.name})"]
    if shared:
        header += ["random choice", "always first"]

    def cells(get) -> list[str]:
        row = []
        for s in report.systems:
            t = get(s)
            row.append(_pct(t["accuracy"]) if t else "-")
            if not shared:
                row += [_pct(t["random_choice"]) if t else "-", _pct(t["first_choice"]) if t else "-"]
        if shared:
            t = get(report.systems[0])
            row += [_pct(t["random_choice"]) if t else "-", _pct(t["first_choice"]) if t else "-"]
        return row

    pad = [""] * (len(header) - 1 - len(report.systems))
    rows = [["accuracy (official rule)"] + cells(lambda s: s.totals)]
    rows.append(["unanswered (count)"] + [str(s.totals["unanswered"]) for s in report.systems] + pad)
    rows.append(["unanswered rate"] + [_pct(s.totals["unanswered_rate"]) for s in report.systems] + pad)
    rows.append(["no output (missing/failed)"] + [str(s.totals["no_output"]) for s in report.systems] + pad)
    rows.append(["items"] + [str(s.totals["n"]) for s in report.systems] + pad)
    if any(s.judge for s in report.systems):
        rows.append(
            ["accuracy (LLM judge extraction)"]
            + [_pct(s.judge["accuracy"]) if s.judge else "-" for s in report.systems]
            + pad
        )
    names = list(report.systems[0].breakdowns)
    for name in names:
        values = sorted({v for s in report.systems for v in s.breakdowns.get(name, {})})
        for value in values:
            n = max(s.breakdowns.get(name, {}).get(value, {}).get("n", 0) for s in report.systems)
            label = f"{name}: {value or '(none)'} (n={n})"
            rows.append([label] + cells(lambda s, name=name, value=value: s.breakdowns.get(name, {}).get(value)))
    return header, rows


def _notes(report: ChoiceReport) -> list[str]:
    return [f"{s.name}: {note}" for s in report.systems for note in s.notes]


def rich_table(report: ChoiceReport):
    """A rich Table for stdout, captioned with the rule and notes."""
    header, rows = table_rows(report)
    return make_table(f"musilingo eval - {report.split}", header_lines(report) + _notes(report), header, rows)


def make_table(title: str, caption: list[str], header: list[str], rows: list[list[str]]):
    """A rich Table: first column left-aligned, numbers right-aligned, caption lines below (both reports)."""
    from rich.table import Table

    table = Table(title=title, caption="\n".join(caption), caption_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def report_json(report: ChoiceReport) -> list[dict[str, Any]]:
    """One object per predictions file: totals (fractions in [0, 1]), breakdowns, rule, notes."""
    return [
        {
            "predictions": s.path,
            "split": report.split,
            "benchmark": report.benchmark,
            "rule": report.rule,
            "prompt": report.prompt,
            **s.totals,
            "breakdowns": s.breakdowns,
            "judge": s.judge,
            "notes": s.notes,
            "per_item": s.per_item_path,
        }
        for s in report.systems
    ]


def render_text(report: ChoiceReport, fmt: str) -> str:
    """The report as markdown, csv or json text."""
    if fmt == "json":
        return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"
    header, rows = table_rows(report)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        writer.writerow(["rule", report.rule] + [""] * (len(header) - 2))
        return buffer.getvalue()
    lines = [f"- {line}" for line in header_lines(report) + _notes(report)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
