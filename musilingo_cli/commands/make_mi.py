"""`musilingo make-mi`: not built yet."""

from musilingo_cli.errors import NotBuiltError


def command() -> None:
    """Not built yet."""
    raise NotBuiltError("`musilingo make-mi` is not built yet; see the project's open issues")
