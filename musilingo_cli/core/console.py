"""Results go to stdout, progress and diagnostics to stderr (so `--json | jq` works)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# soft_wrap: a one-line error stays one line in logs, whatever the terminal width
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


def progress(transient: bool = False) -> Progress:
    """A rich progress bar on stderr, the one look shared by every long job."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
    )


def warn(message: str) -> None:
    """Print one yellow warning line on stderr."""
    stderr.print(f"[yellow]warning:[/yellow] {escape(message)}")  # paths may hold [brackets]
