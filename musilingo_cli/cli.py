"""The `musilingo` command line: each subcommand lives in `musilingo_cli/commands/`, parses its
options into a config and calls one library `run()`. No logic here but the error policy:

- a usage error (unknown option or command, bad value, missing option) is one line plus
  "Try 'musilingo X --help' for help.", exit 2;
- a MusilingoError (a refusal: bad file, bad option combination) is one red line, its exit code;
- an OSError (read-only folder, a folder where a file goes) is one line naming the file, exit 1;
- anything else is a bug: one line saying so, exit 1.
`--verbose` (anywhere on the line) or `MUSILINGO_DEBUG=1` shows the full traceback instead, and keeps
the libraries' loading bars and warnings on stderr.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Optional

import typer

from musilingo_cli import __version__
from musilingo_cli.commands import ask, chat, evaluate, export, make_mi, serve, train
from musilingo_cli.core.console import quiet_libraries
from musilingo_cli.core.errors import MusilingoError, missing_module_message, os_error_message


def _flags_show_no_type() -> None:
    """`--help` lists a plain flag (--json, --caption, -h) without a `<bool>` type column: Typer's
    rich help shows one for every option, while its plain-text help (and click's) omits it for flags,
    which take no value. Options that take values keep their types."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_musilingo", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._musilingo = True
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_type()


def _wide_help_when_piped() -> None:
    """Help piped into a pager, a file or a test is 80 columns in rich, which cuts long option names
    (`--gradient-checkpoin…`); 120 fits them all. A terminal keeps its width; COLUMNS and
    TERMINAL_WIDTH still win."""
    import typer.rich_utils as rich_utils

    if rich_utils.MAX_WIDTH is None and "COLUMNS" not in os.environ and not sys.stdout.isatty():
        rich_utils.MAX_WIDTH = 120


# Locals can hold API keys: never show them in tracebacks.
app = typer.Typer(
    name="musilingo",
    help="Music captioning and question answering from raw audio (MusiLingo reproduced).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["--help", "-h"]},
)
app.command("make-mi")(make_mi.command)
app.command("train")(train.command)
app.command("ask")(ask.command)
app.command("eval")(evaluate.command)
app.command("chat")(chat.command)
app.command("serve")(serve.command)
app.command("export")(export.command)
_COMMANDS = ("make-mi", "train", "ask", "eval", "chat", "serve", "export")

_VERBOSE_FLAGS = ("--verbose", "-v")
_DEBUG_ENV = ("MUSILINGO_DEBUG", "MUSILINGO_VERBOSE")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"musilingo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
    verbose: bool = typer.Option(
        False,
        *_VERBOSE_FLAGS,
        help="Show tracebacks and the libraries' loading bars and warnings (also: MUSILINGO_DEBUG=1). "
        "Accepted anywhere on the line.",
    ),
    local_rank: Optional[int] = typer.Option(
        None,
        "--local_rank",
        "--local-rank",
        hidden=True,
        help="Set by the deepspeed launcher (`deepspeed --module musilingo_cli train ...`), before the subcommand.",
    ),
) -> None:
    """Music captioning and question answering from raw audio (MusiLingo reproduced)."""
    if local_rank is not None:  # the launcher also sets LOCAL_RANK in most versions; the flag wins only if not
        os.environ.setdefault("LOCAL_RANK", str(local_rank))


def verbose_first(args: list[str]) -> tuple[list[str], bool]:
    """(args with --verbose moved before the subcommand, whether it was given). Users type it
    at the end (`musilingo ask a.wav q --verbose`); Typer only knows it on the root."""
    end = args.index("--") if "--" in args else len(args)
    found = [a for a in args[:end] if a in _VERBOSE_FLAGS]
    if not found:
        return args, False
    rest = [a for a in args[:end] if a not in _VERBOSE_FLAGS] + args[end:]
    return ["--verbose", *rest], True


def _usage_error(err: typer.TyperException, args: list[str]) -> int:
    """One line (`error: ...`) plus click's "Try ... --help" hint on stderr; the exit code."""
    ctx = getattr(err, "ctx", None)
    if type(err).__name__ == "NoArgsIsHelpError":  # bare `musilingo`: the help is the answer
        err.show()
        return err.exit_code
    message = " ".join(err.format_message().split())
    sys.stderr.write(f"error: {message}\n")
    if ctx is not None:
        command = ctx.command_path
    else:  # some parser errors carry no context: name the subcommand from the line itself
        words = [a for a in args if not a.startswith("-")][:1]
        command = " ".join(["musilingo", *(w for w in words if w in _COMMANDS)])
    sys.stderr.write(f"Try '{command} --help' for help.\n")
    return getattr(err, "exit_code", 2)


_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".safetensors")


def weights_file_in_traceback(err: BaseException) -> str | None:
    """The weights file a loader was reading when `err` was raised: the innermost frame's local that
    names an existing file with a weights suffix (libraries do not put it in the message)."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, (str, Path)) and str(value).endswith(_WEIGHT_SUFFIXES) and Path(value).is_file():
                return str(value)
    return None


def refused_pickle_message(path: str | None) -> str:
    """One line for a weights pickle that holds more than tensors."""
    where = path or "a weights file"
    return (
        f"{where}: refused: this pickle holds more than tensors, and musilingo never runs code from a weights file "
        "(torch.load weights_only=True); use the model's .safetensors weights, or convert a copy you trust"
    )


def _one_line(text: str) -> None:
    from rich.markup import escape

    from musilingo_cli.core.console import stderr

    stderr.print(f"[red]error:[/red] {escape(' '.join(text.split()))}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (see the module docstring for the error policy)."""
    args, verbose = verbose_first(list(sys.argv[1:] if argv is None else argv))
    verbose = verbose or any(os.environ.get(name, "") not in ("", "0") for name in _DEBUG_ENV)
    if not verbose:
        quiet_libraries()
    if "--help" in args or "-h" in args:
        _wide_help_when_piped()
    try:
        code = app(args=args, prog_name="musilingo", standalone_mode=False)  # Ctrl-C returns 130 here
        if isinstance(code, int) and code:
            if code == 130:
                sys.stderr.write("aborted\n")
            sys.exit(code)
    except typer.TyperException as err:  # Typer's bundled click: usage errors, bad values
        sys.exit(_usage_error(err, args))
    except MusilingoError as err:
        if verbose:
            raise
        _one_line(str(err))
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except ModuleNotFoundError as err:  # an optional extra that is not installed
        message = missing_module_message(err)
        if verbose or message is None:
            raise
        _one_line(message)
        sys.exit(1)
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) refused a pickle in a model folder
        if verbose:
            raise
        _one_line(refused_pickle_message(weights_file_in_traceback(err)))
        sys.exit(1)
    except OSError as err:  # a read-only folder, a folder where a file goes, a full disk
        if verbose:
            raise
        _one_line(os_error_message(err))
        sys.exit(1)
    except Exception as err:
        if verbose:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        _one_line(f"unexpected {type(err).__name__}: {first} (a bug: rerun with --verbose and report the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
