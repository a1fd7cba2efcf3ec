"""Generation settings and the official post-processing of answers."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from musilingo_cli.core.errors import ConfigError

# The official qa.py: sampling, T=0.1, top_p=0.5, one beam, 300 new tokens, stop on "###".
PRESETS: dict[str, dict[str, Any]] = {
    "official": {"do_sample": True, "temperature": 0.1, "top_p": 0.5},
    "greedy": {"do_sample": False},
}


@dataclass
class GenerationSettings:
    """How answers are decoded. `preset` names the defaults; explicit fields override them."""

    preset: str = "official"
    max_new_tokens: int = 300
    do_sample: bool = True
    temperature: float = 0.1
    top_p: float = 0.5
    top_k: int = 50  # transformers' default, which the official run kept
    min_new_tokens: int = 0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    json_schema: str | None = None  # compact JSON Schema text: answers are constrained to it (structured.py)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GenerationSettings:
        """Settings of a named preset ("official" or "greedy") with overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown generation preset {name!r}: choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=name, **values)

    @property
    def needs_transformers(self) -> bool:
        """Beam search and repetition penalties: only transformers' `generate` does them."""
        return self.num_beams > 1 or self.repetition_penalty != 1.0

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' `generate` (sampling knobs only when sampling)."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """For records: every answer says how it was decoded (a JSON schema by its digest)."""
        body = dataclasses.asdict(self)
        if self.json_schema is not None:
            body["json_schema"] = "sha256:" + hashlib.sha256(self.json_schema.encode()).hexdigest()[:16]
        return body


def postprocess(text: str, end_sym: str) -> str:
    """The official answer extraction: text before the end symbol, after the last 'Assistant:'."""
    if end_sym:
        text = text.split(end_sym)[0]
    return text.split("Assistant:")[-1].strip()
