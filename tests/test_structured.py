"""`ask --json-schema`: decoding constrained by xgrammar's token bitmask inside our decoding loop,
on tiny real models on CPU and on real audio files: every answer parses and validates (checked
with jsonschema), records carry the object, bad schemas and cut-off answers say what to do. The
bundled catalogue schema runs with a real small LLM (SmolLM2-135M, slow)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from audio_helpers import write_music
from model_helpers import JSON_ALPHABET, build_model
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.core.errors import ConfigError
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.model.checkpoint import save_checkpoint
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.model.structured import builtin_prompt, check_answer, read_schema
from musilingo_cli.pipelines.ask import AskConfig, run

# what a tiny tokenizer can spell (no spaces inside enum values: its Metaspace "▁" is a plain character)
TAGS = {
    "type": "object",
    "properties": {
        "genre": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 12},
            "minItems": 1,
            "maxItems": 2,
        },
        "tempo_bpm": {"type": "integer", "minimum": 20, "maximum": 300},
        "vocals": {"enum": ["none", "male", "female"]},
        "caption": {"type": "string", "maxLength": 40},
    },
    "required": ["genre", "tempo_bpm", "vocals", "caption"],
    "additionalProperties": False,
}
QUESTIONS = ["What genre is this?", "Describe the audio in detail.", "Tempo?"]
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("structured")
    model = build_model(root, extra_alphabet=JSON_ALPHABET)
    save_checkpoint(root / "ckpt", model.config, model.trainable_state())
    schema = root / "tags.schema.json"
    schema.write_text(json.dumps(TAGS))
    (root / "audio").mkdir()
    for i in range(3):
        write_music(root / "audio" / f"song{i}.wav", 2 + i, 24000, seed=i)
    return {"root": root, "model": model, "ckpt": str(root / "ckpt"), "schema": schema, "audio": root / "audio"}


def _features(model):
    torch.manual_seed(5)
    return [model.encode(torch.randn(1, 24000 * s) * 0.1)[0] for s in (10, 25, 4)]


@pytest.mark.parametrize("preset", ["greedy", "official"])
def test_every_constrained_answer_parses_and_validates(tiny, preset):
    model, schema = tiny["model"], read_schema(tiny["schema"])
    feats = _features(model)
    torch.manual_seed(0)
    settings = GenerationSettings.from_preset(preset, max_new_tokens=200, json_schema=schema)
    answers = model.generate(feats, QUESTIONS, settings)
    for answer in answers:
        jsonschema.validate(json.loads(answer), TAGS)  # independent of the decoder
        assert check_answer(answer, schema) == (json.loads(answer), None)
    free = model.generate(feats, QUESTIONS, GenerationSettings.from_preset(preset, max_new_tokens=60))
    assert not any(check_answer(a, schema)[1] is None for a in free)  # the same model unconstrained: no JSON


def test_ask_records_carry_the_parsed_object(tiny, tmp_path):
    out = tmp_path / "tags.jsonl"
    result = runner.invoke(
        app,
        [
            "ask",
            str(tiny["audio"]),
            "-q",
            "Tag this music.",
            "--model",
            tiny["ckpt"],
            "--json-schema",
            str(tiny["schema"]),
            "--preset",
            "greedy",
            "--max-new-tokens",
            "200",
            "--device",
            "cpu",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert len(records) == 3
    for record in records:
        assert record["error"] is None
        assert record["json"] == json.loads(record["answer"])
        jsonschema.validate(record["json"], TAGS)
        assert record["settings"]["json_schema"].startswith("sha256:")


def test_an_answer_cut_short_is_an_error_record_that_keeps_the_text(tiny, tmp_path):
    summary = run(
        AskConfig(
            inputs=[str(tiny["audio"] / "song0.wav")],
            questions=["Tag it."],
            model=tiny["ckpt"],
            preset="greedy",
            max_new_tokens=4,
            device="cpu",
            output=tmp_path / "a.jsonl",
            json_schema=str(tiny["schema"]),
        )
    )
    (record,) = read_jsonl(tmp_path / "a.jsonl")
    assert summary["failed"] == 1 and record["json"] is None
    assert "raise --max-new-tokens" in record["error"] and record["answer"].startswith("{")


def test_bad_schemas_and_beam_search_say_what_to_do(tiny, tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "invalid.json").write_text(json.dumps({"type": 5}))
    with pytest.raises(ConfigError, match="cannot read it"):
        read_schema(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not JSON"):
        read_schema(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        read_schema(tmp_path / "invalid.json")
    beams = GenerationSettings.from_preset("greedy", num_beams=2, json_schema=read_schema(tiny["schema"]))
    with pytest.raises(ConfigError, match="not beam search"):
        tiny["model"].generate(_features(tiny["model"])[:1], ["q"], beams)
    result = runner.invoke(
        app,
        [
            "ask",
            str(tiny["audio"] / "song0.wav"),
            "What?",
            "--model",
            tiny["ckpt"],
            "--json-schema",
            str(tmp_path / "broken.json"),
            "--device",
            "cpu",
        ],
    )
    assert isinstance(result.exception, ConfigError) and "not JSON" in str(result.exception)  # main() prints it


def test_the_bundled_catalogue_schema_is_valid_and_has_its_prompt():
    schema = json.loads(read_schema("catalogue"))
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert set(schema["required"]) == {"genre", "mood", "instruments", "tempo_bpm", "key", "vocals", "caption"}
    assert "JSON" in builtin_prompt("catalogue")


@pytest.mark.slow
def test_catalogue_tags_from_a_real_llm(smollm2, tiny, tmp_path):
    """SmolLM2-135M's byte-level BPE spells everything the catalogue schema needs (spaces in keys)."""
    from model_helpers import make_mert

    mert = make_mert(tmp_path / "mert")
    out = tmp_path / "catalogue.jsonl"
    result = runner.invoke(
        app,
        [
            "ask",
            str(tiny["audio"] / "song1.wav"),
            "--json-schema",
            "catalogue",
            "--encoder",
            str(mert),
            "--llm",
            str(smollm2),
            "--preset",
            "greedy",
            "--max-new-tokens",
            "400",
            "--device",
            "cpu",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(out)
    assert record["question"] == builtin_prompt("catalogue")  # no question given: the schema's own prompt
    jsonschema.validate(record["json"], json.loads(read_schema("catalogue")))
