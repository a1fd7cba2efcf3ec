"""make-mi's prompt files: `[system]` and `[user]` sections with `{placeholders}`, loaded by name
from the package resource `musilingo_cli.prompts` (`short` -> make_mi_short.txt; the files live in
the repository's top-level prompts/) or from a path, and hashed so every record names its prompt."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import ConfigError


@dataclass(frozen=True)
class Prompt:
    """A prompt file: `[system]` and `[user]` sections with `{placeholders}`."""

    name: str
    sha256: str
    system: str
    user: str

    def messages(self, **values: Any) -> list[dict[str, str]]:
        """Chat messages with `{name}` placeholders filled in one pass: braces in the template that
        name no value (JSON examples) and braces inside the values (a caption "a riff in {n}/4
        time", pairs as JSON) reach the model unchanged."""
        return [
            {"role": "system", "content": _fill(self.system, values)},
            {"role": "user", "content": _fill(self.user, values)},
        ]


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _fill(template: str, values: dict[str, Any]) -> str:
    # One re.sub over the template: a value is never scanned again for placeholders.
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def load_prompt(spec: str) -> Prompt:
    """A prompt by name (`short` -> prompts/make_mi_short.txt in the package) or by file path."""
    path = Path(spec)
    if path.suffix == ".txt" or os.sep in spec or path.is_file():
        if not path.is_file():
            raise ConfigError(f"prompt file {spec} not found")
        text, name = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = resources.files("musilingo_cli.prompts") / f"make_mi_{spec}.txt"
        if not resource.is_file():
            known = sorted(
                p.name[8:-4]
                for p in resources.files("musilingo_cli.prompts").iterdir()
                if p.name.startswith("make_mi_")
            )
            raise ConfigError(f"no prompt named '{spec}'; known: {', '.join(known)}, or pass a .txt path")
        text, name = resource.read_text(encoding="utf-8"), spec
    sections = _sections(text)
    if "system" not in sections or "user" not in sections:
        raise ConfigError(f"prompt {name}: needs a [system] and a [user] section")
    return Prompt(name, hashlib.sha256(text.encode()).hexdigest(), sections["system"], sections["user"])


def _sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.fullmatch(r"\[(system|user)\]\s*", line)
        if header:
            current = header.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        # lines before the first section are comments for the editor of the file
    return {k: "\n".join(v).strip() for k, v in sections.items()}
