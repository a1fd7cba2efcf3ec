"""Results go to stdout, progress and diagnostics to stderr (so `--json | jq` works).

Libraries print to stdout too (DeepSpeed's accelerator notice, loading messages): while a
command's pipeline runs, `results_only_on_stdout()` points `sys.stdout` at stderr and keeps our
own `stdout` console and `echo()` on the real stdout, so only results reach it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import IO, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# soft_wrap: a one-line error stays one line in logs, whatever the terminal width
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

_results: IO[str] | None = None  # the real stdout while results_only_on_stdout() is active
_quiet_native = False  # set by quiet_libraries(): C libraries' own stderr lines are dropped too


def echo(text: str = "", nl: bool = True) -> None:
    """Write one result (plain text) to the real stdout, also inside results_only_on_stdout()."""
    stream = _results or sys.stdout
    stream.write(text + ("\n" if nl else ""))
    stream.flush()


@contextlib.contextmanager
def results_only_on_stdout() -> Iterator[None]:
    """Inside: whatever a library prints goes to stderr; `echo()` and `stdout` still reach stdout."""
    global _results
    if _results is not None:  # nested: already redirected
        yield
        return
    _results = sys.stdout
    stdout.file = _results
    try:
        # fd 2 is only ours to silence when sys.stderr is the process's own (not a host's or pytest's capture)
        drop = _quiet_native and sys.stderr is sys.__stderr__
        with _native_stderr_dropped() if drop else contextlib.nullcontext():
            with contextlib.redirect_stdout(sys.stderr):
                yield
    finally:
        _results = None
        stdout.file = None  # back to "whatever sys.stdout is"


@contextlib.contextmanager
def _native_stderr_dropped() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null (libmpg123's "Note: Illegal Audio-MPEG-Header" and other C
    libraries' lines), while Python's sys.stderr (our console, progress, warnings) keeps the real one."""
    sys.stderr.flush()
    saved = os.dup(2)
    real = os.fdopen(saved, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    previous = sys.stderr
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = real
    try:
        yield
    finally:
        real.flush()
        os.dup2(saved, 2)
        sys.stderr = previous
        real.close()


def quiet_libraries() -> None:
    """Turn off the libraries' loading bars and advisory warnings (the CLI does, unless --verbose).

    Environment variables, so nothing is imported here and children (torchrun ranks) inherit them;
    inside results_only_on_stdout() C libraries' own stderr lines (mp3 decoder notes) are dropped."""
    global _quiet_native
    _quiet_native = True
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # children started by torchrun / deepspeed
    warnings.filterwarnings("ignore")
    # DeepSpeed's logger (its "Setting accelerator to CPU" notice at import, engine set-up lines) resets
    # its level when deepspeed is imported, but keeps a filter set on it before: errors still show
    chatty = logging.getLogger("DeepSpeed")
    if _errors_only not in chatty.filters:
        chatty.addFilter(_errors_only)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


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
