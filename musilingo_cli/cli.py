"""The `musilingo` command line: each subcommand lives in `musilingo_cli/commands/`, parses its
options into a config and calls one library `run()`. No logic here but the error policy."""

from __future__ import annotations

import os
import sys

import typer

from musilingo_cli import __version__
from musilingo_cli.commands import ask, evaluate, export, make_mi, train
from musilingo_cli.core.errors import MusilingoError

# Locals can hold API keys: never show them in tracebacks.
app = typer.Typer(
    name="musilingo",
    help="Music captioning and question answering from raw audio (MusiLingo reproduced).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command("make-mi")(make_mi.command)
app.command("train")(train.command)
app.command("ask")(ask.command)
app.command("eval")(evaluate.command)
app.command("export")(export.command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"musilingo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Music captioning and question answering from raw audio (MusiLingo reproduced)."""


def main() -> None:
    """Console-script entry point: one red line and a non-zero exit for anticipated errors."""
    try:
        code = app(standalone_mode=False)  # Ctrl-C comes back as a return value (130) here
        if isinstance(code, int) and code:
            if code == 130:
                sys.stderr.write("aborted\n")
            sys.exit(code)
    except MusilingoError as err:
        if os.environ.get("MUSILINGO_DEBUG"):
            raise
        from rich.markup import escape

        from musilingo_cli.core.console import stderr

        stderr.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
