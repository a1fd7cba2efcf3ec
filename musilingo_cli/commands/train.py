"""`musilingo train`: not built yet."""

from musilingo_cli.errors import NotBuiltError


def command() -> None:
    """Not built yet."""
    raise NotBuiltError("`musilingo train` is not built yet; see the project's open issues")
