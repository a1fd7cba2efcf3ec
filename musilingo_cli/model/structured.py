"""Answers that follow a JSON schema: decoding constrained by xgrammar's token bitmask.

xgrammar (https://github.com/mlc-ai/xgrammar) compiles a JSON schema into a grammar over the
LLM's vocabulary once; per row a GrammarMatcher then says, before each token, which tokens keep
the text a valid prefix of a schema-valid JSON value (a bitmask [B, ceil(V / 32)] int32), and
advances with the chosen token. Our decoding loop (decoding.Decoder) masks its logits with it
before choosing, so greedy and sampling both stay inside the grammar; the matcher lets only the
LLM's EOS through once the object is complete. The output is compact JSON (no free whitespace:
fewer tokens, no whitespace loops). Every answer is then parsed and validated with `jsonschema`
(the reference validator), so a record's object is checked independently of the decoder.

A ready schema for catalogue tagging ships with the package: `--json-schema catalogue`
(resources/json/catalogue.schema.json) with its prompt (catalogue.prompt.txt).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from musilingo_cli.core.errors import ConfigError

BUILTIN = {"catalogue": "catalogue"}  # --json-schema NAME -> resources/json/NAME.schema.json


def _resource(name: str) -> str:
    return resources.files("musilingo_cli").joinpath("resources", "json", name).read_text(encoding="utf-8")


def builtin_prompt(name: str) -> str:
    """The question that goes with a bundled schema (e.g. 'catalogue')."""
    return _resource(f"{BUILTIN[name]}.prompt.txt").strip()


def read_schema(spec: str | Path) -> str:
    """A bundled schema name ('catalogue') or a JSON Schema file -> the schema as compact JSON text.

    Raises ConfigError when the file is missing, is not JSON, or is not a valid JSON Schema
    (checked with jsonschema's meta-schema for the schema's draft)."""
    spec = str(spec)
    if spec in BUILTIN:
        text = _resource(f"{BUILTIN[spec]}.schema.json")
    else:
        try:
            text = Path(spec).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(
                f"--json-schema {spec}: cannot read it ({err.strerror}); give a JSON Schema file "
                f"or one of: {', '.join(BUILTIN)}"
            ) from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--json-schema {spec}: not JSON ({err.msg} at line {err.lineno})") from None
    validator = _jsonschema().validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except _jsonschema().SchemaError as err:
        raise ConfigError(f"--json-schema {spec}: not a valid JSON Schema ({err.message})") from None
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def schema_digest(schema_text: str) -> str:
    """'sha256:<first 16 hex>' of the compact schema: what answer records carry."""
    return "sha256:" + hashlib.sha256(schema_text.encode()).hexdigest()[:16]


def check_answer(text: str, schema_text: str) -> tuple[Any, str | None]:
    """(parsed object, None) when `text` is JSON valid against the schema, else (None, why)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return None, (
            f"the answer is not complete JSON ({err.msg} at character {err.pos}); "
            "raise --max-new-tokens so the object can close"
        )
    js = _jsonschema()
    schema = json.loads(schema_text)
    error = js.exceptions.best_match(js.validators.validator_for(schema)(schema).iter_errors(value))
    if error is not None:
        return None, f"the answer does not follow the schema: {error.message}"
    return value, None


def _jsonschema():
    try:
        import jsonschema
    except ImportError:
        raise ConfigError("--json-schema needs jsonschema and xgrammar: pip install 'musilingo-cli[json]'") from None
    return jsonschema


def _xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise ConfigError("--json-schema needs jsonschema and xgrammar: pip install 'musilingo-cli[json]'") from None
    return xgrammar


class JsonGrammar:
    """One schema compiled for one tokenizer (compiling is the costly part: done once)."""

    def __init__(self, tokenizer, vocab_size: int, eos_ids: list[int], schema_text: str):
        xgr = _xgrammar()
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=eos_ids or None)
        if not info.stop_token_ids:
            raise ConfigError("--json-schema: the LLM has no EOS token to end a constrained answer with")
        self.vocab_size = vocab_size
        try:
            self.compiled = xgr.GrammarCompiler(info).compile_json_schema(
                schema_text, any_whitespace=False, separators=(",", ":")
            )
        except RuntimeError as err:
            raise ConfigError(
                f"--json-schema: xgrammar cannot compile this schema ({str(err).splitlines()[0]})"
            ) from None

    def start(self, batch: int) -> JsonConstraint:
        """Fresh matchers for a batch of `batch` rows."""
        return JsonConstraint(self, batch)


class JsonConstraint:
    """Per-row grammar state during one `Decoder.generate` call (host side; one sync per token)."""

    def __init__(self, grammar: JsonGrammar, batch: int):
        xgr = _xgrammar()
        self._xgr = xgr
        self.matchers = [xgr.GrammarMatcher(grammar.compiled) for _ in range(batch)]
        self.bitmask = xgr.allocate_token_bitmask(batch, grammar.vocab_size)

    def mask(self, logits: torch.Tensor, alive: list[bool]) -> torch.Tensor:
        """Float logits [B, V] with every token the grammar forbids set to -inf (rows in `alive`)."""
        rows = [i for i, a in enumerate(alive) if a and not self.matchers[i].is_terminated()]
        for i in rows:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
            if not self.bitmask[i].any():
                raise ConfigError(
                    "--json-schema: the LLM's vocabulary cannot spell what the schema needs next "
                    "(e.g. a brace or quote); use an LLM whose tokenizer covers JSON"
                )
        if rows:
            mask = self.bitmask.to(logits.device, non_blocking=True)
            self._xgr.apply_token_bitmask_inplace(logits, mask, vocab_size=logits.shape[-1], indices=rows)
        return logits

    def accept(self, tokens: list[int], alive: list[bool]) -> None:
        """Advance each live row's matcher by its chosen token."""
        for i, (token, a) in enumerate(zip(tokens, alive)):
            if a and not self.matchers[i].is_terminated() and not self.matchers[i].accept_token(token):
                raise RuntimeError(f"xgrammar rejected token {token} it allowed (row {i})")
