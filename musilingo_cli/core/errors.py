"""One error policy: anticipated problems raise a MusilingoError whose message says what is
wrong and how to fix it; the CLI prints it as one line on stderr and exits non-zero."""

from pathlib import Path


class MusilingoError(Exception):
    """An anticipated problem with the user's input, data, or environment."""

    exit_code = 1


class ConfigError(MusilingoError):
    """A bad option, flag combination or config file."""

    exit_code = 2


class AudioError(MusilingoError):
    """An audio file that cannot be decoded (missing, empty, truncated, not audio)."""


class DataError(MusilingoError):
    """A dataset, manifest or captions file that cannot be read as documented."""


class CheckpointError(MusilingoError):
    """Model weights or a checkpoint that are missing or not in a known layout."""


class ChatAPIError(MusilingoError):
    """A chat API that refuses the request (bad key, bad model, bad base URL)."""


class MissingExtraError(ConfigError):
    """An optional dependency group (a pip "extra") that this command needs is not installed."""


# Which extra brings each optional top-level module (pyproject.toml [project.optional-dependencies]).
EXTRA_OF_MODULE = {
    "deepspeed": "train",
    "tensorboard": "train",
    "pyarrow": "train",
    "openai": "make-mi",
    "nltk": "eval",
    "rouge_score": "eval",
    "bert_score": "eval",
    "sacrebleu": "eval",
}


def install_hint(extra: str) -> str:
    """The pip command that installs `extra` (quoted for shells that glob brackets)."""
    return f"pip install 'musilingo-cli[{extra}]'"


def require_extra(extra: str, *modules: str, what: str) -> None:
    """Raise MissingExtraError (one line naming the pip install) unless every module can be imported.

    Checks with importlib.util.find_spec, so nothing heavy is imported here. `what` names the
    job in the message ("musilingo train")."""
    missing = [m for m in modules if not _importable(m)]
    if missing:
        raise MissingExtraError(
            f"{what} needs the optional '{extra}' dependencies ({', '.join(missing)} not installed): "
            f"{install_hint(extra)}"
        )


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def missing_module_message(err: ModuleNotFoundError) -> str | None:
    """One line for an optional module found missing at import time, or None if it is not ours to explain."""
    root = (err.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    return f"{root} is not installed; it comes with the optional '{extra}' dependencies: {install_hint(extra)}"


def csv_error(path, line: int, err: Exception) -> DataError:
    """A DataError for a row Python's csv module cannot read, with the likely fix: an over-long
    field (csv's 128 KB limit) is nearly always a quote that never closes."""
    reason = str(err)
    if "field larger than field limit" in reason:
        return DataError(
            f"{path}:{line}: a field is longer than csv's limit of 128 KB; usually a quote (\") opens a field and "
            "never closes: fix the quoting, or shorten the field"
        )
    return DataError(f"{path}:{line}: unreadable CSV row ({reason}); check the quoting and the delimiter")


def os_error_message(err: OSError) -> str:
    """One line for a file-system refusal: the file, the reason, and what to do about it."""
    import errno

    name = err.filename if err.filename is not None else ""
    reason = err.strerror or str(err)
    fixes = {
        errno.EACCES: "choose a folder you can write to (-o/--output, --out) or fix its permissions",
        errno.EPERM: "choose a folder you can write to (-o/--output, --out) or fix its permissions",
        errno.EROFS: "the file system is read-only: choose another folder",
        errno.EISDIR: "that is a folder: give a file name inside it",
        errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
        errno.ENOSPC: "the disk is full: free space or choose another folder",
        errno.ENOENT: "check the path",
    }
    fix = fixes.get(err.errno, "check the path and its permissions")
    if err.errno == errno.ENOENT and name and not Path(name).parent.exists():
        fix = f"the folder {Path(name).parent} does not exist: create it first, or choose another path"
    return f"{name}: {reason}; {fix}" if name else f"{reason}; {fix}"
