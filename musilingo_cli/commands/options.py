"""Option conventions shared by the subcommands: one machine-output flag (`--json`, the same as
`--format json`), `-o/--output` for each command's main output, `-h/--help` everywhere."""

from __future__ import annotations

from musilingo_cli.core.errors import ConfigError


def output_format(value: str, choices: tuple[str, ...], as_json: bool = False) -> str:
    """The chosen `--format` (`json` when `--json` was given), checked against `choices`."""
    if as_json:
        if value not in (choices[0], "json"):
            raise ConfigError(f"--json and --format {value} disagree: pass one of them")
        return "json"
    if value not in choices:
        raise ConfigError(f"--format must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}")
    return value
