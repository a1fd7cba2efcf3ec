"""`musilingo ask`: not built yet."""

from musilingo_cli.errors import NotBuiltError


def command() -> None:
    """Not built yet."""
    raise NotBuiltError("`musilingo ask` is not built yet; see the project's open issues")
