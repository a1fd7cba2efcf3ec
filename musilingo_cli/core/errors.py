"""One error policy: anticipated problems raise a MusilingoError whose message says what is
wrong and how to fix it; the CLI prints it as one line on stderr and exits non-zero."""


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
