"""`--plot FILE.png`: the report as one picture. Captioning/QA: the main metrics of each predictions
file beside the floor. Multiple choice: accuracy overall and per category of each file beside the
exact random-choice and always-first baselines. Several files are drawn side by side."""

from __future__ import annotations

from pathlib import Path

from musilingo_cli.core.errors import ConfigError
from musilingo_cli.pipelines.evaluate import metrics
from musilingo_cli.pipelines.evaluate.choice import ChoiceReport
from musilingo_cli.pipelines.evaluate.config import EvalReport

MAIN_KEYS = ("bleu1", "bleu4", "bleu_mean", "meteor", "rouge_l", "bertscore_f1")
CHOICE_GROUP = {"muchomusic": "reasoning", "mmau": "sub-category", "mmar": "category"}


def _bars(
    ax, labels: list[str], series: list[tuple[str, list[float | None]]], hatch_last: int = 0, percent: bool = False
) -> None:
    """Grouped bars: one group per label, one bar per series (None drawn as 0 and marked '-')."""
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series):
        xs = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        heights = [v or 0.0 for v in values]
        baseline = index >= len(series) - hatch_last
        bars = ax.bar(xs, heights, width, label=name, hatch="//" if baseline else None, alpha=0.55 if baseline else 1)
        for bar, value in zip(bars, values):
            text = "-" if value is None else f"{value:.1f}" if percent else f"{value:.3f}"
            ax.annotate(
                text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
            )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8, loc="upper right", ncol=min(4, len(series)))
    ax.set_ylim(0, max([v or 0.0 for _, values in series for v in values] + [1e-9]) * 1.25)


def _caption_figure(report: EvalReport):
    import matplotlib.pyplot as plt

    keys = [k for k in MAIN_KEYS if any(s.scores.get(k) is not None for s in report.systems)]
    labels = [metrics.LABELS[report.profile][k] for k in keys]
    series = [(s.name, [s.scores.get(k) for k in keys]) for s in report.systems]
    floors = [s for s in report.systems if s.floor is not None]
    if floors:
        series.append(("floor (shuffled references)", [floors[0].floor.get(k) for k in keys]))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(keys) * max(1, len(series)) / 2), 4.5))
    _bars(ax, labels, series, hatch_last=1 if floors else 0)
    ax.set_ylabel("score (0-1)")
    ax.set_title(f"musilingo eval - profile {report.profile}")
    return fig


def _choice_figure(report: ChoiceReport):
    import matplotlib.pyplot as plt

    group = CHOICE_GROUP[report.benchmark]
    first = report.systems[0]
    values = list(first.breakdowns.get(group, {}))
    labels = ["overall"] + [f"{v or '(none)'}" for v in values]

    def row(s, key):
        return [s.totals[key]] + [s.breakdowns.get(group, {}).get(v, {}).get(key) for v in values]

    def pct(xs):
        return [None if x is None else 100 * x for x in xs]

    series = [(s.name, pct(row(s, "accuracy"))) for s in report.systems]
    series += [("random choice", pct(row(first, "random_choice"))), ("always first", pct(row(first, "first_choice")))]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) * len(series) / 2), 4.5))
    _bars(ax, labels, series, hatch_last=2, percent=True)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"musilingo eval - {report.split} ({report.benchmark} rule), by {group}")
    return fig


def write_plot(report: EvalReport | ChoiceReport, path: Path) -> Path:
    """Draw the report into `path` (PNG, or any format matplotlib knows by the suffix).

    Raises ConfigError when matplotlib is missing or the file cannot be written."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    fig = _choice_figure(report) if isinstance(report, ChoiceReport) else _caption_figure(report)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--plot {path}: cannot write ({err})") from None
    finally:
        plt.close(fig)
    return path
