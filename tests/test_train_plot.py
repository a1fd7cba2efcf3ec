"""loss.png is optional: drawn from metrics.jsonl with matplotlib, and without matplotlib the run
says so in one line and goes on (matplotlib comes with the `train` extra)."""

from __future__ import annotations

import sys

from musilingo_cli.core.journal import Journal
from musilingo_cli.pipelines.train.metrics import _Logger


def _logger_with_losses(tmp_path) -> _Logger:
    logger = _Logger.__new__(_Logger)  # only the file part: no progress bar, no TensorBoard
    logger.path = tmp_path / "metrics.jsonl"
    with Journal(logger.path, key=lambda r: str(r["step"])) as journal:
        for step, loss in enumerate([3.0, 2.0, 1.5], start=1):
            journal.append({"step": step, "loss": loss})
    return logger


def test_loss_png_is_drawn_with_matplotlib(tmp_path):
    png = _logger_with_losses(tmp_path).plot()
    assert png == tmp_path / "loss.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_plot_is_skipped_with_one_line(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert _logger_with_losses(tmp_path).plot() is None
    assert not (tmp_path / "loss.png").exists()
    err = capsys.readouterr().err
    assert "loss.png not drawn" in err and "musilingo-cli[train]" in err
