"""The CLI surface: the four subcommands exist, --help works, errors are one line."""

import subprocess
import sys

from typer.testing import CliRunner

from musilingo_cli import __version__
from musilingo_cli.cli import app

runner = CliRunner()


def test_subcommands_listed():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("make-mi", "train", "ask", "eval"):
        assert name in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "musilingo_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
