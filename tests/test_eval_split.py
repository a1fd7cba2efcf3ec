"""`musilingo eval --split ... --model ...`: the split is answered through `ask` (resumable), then
scored; a clip whose audio is missing is answered with an error record and counted as failed."""

import json
from pathlib import Path

import pytest
from audio_helpers import write_music
from eval_helpers import wordnet  # noqa: F401  (fixture)
from model_helpers import build_model
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.model.checkpoint import save_checkpoint

EXCERPT = Path(__file__).parent / "data" / "musicqa_eval_excerpt.json"  # real EvalMusicQA items (MU-LLaMA, MIT)
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalsplit")
    model = build_model(tmp)
    return save_checkpoint(tmp / "ckpt", model.config, model.trainable_state())


def _eval(tmp_path, checkpoint, audio_dir):
    args = [
        "eval",
        "--split",
        "musicqa",
        "--data",
        str(EXCERPT),
        "--model",
        str(checkpoint),
        "--audio-dir",
        str(audio_dir),
        "--answers",
        str(tmp_path / "answers.jsonl"),
        "--preset",
        "greedy",
        "--max-new-tokens",
        "6",
        "--no-bertscore",
        "--format",
        "json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_split_is_answered_then_scored_and_resumes(tmp_path, checkpoint, wordnet):
    items = json.loads(EXCERPT.read_text())
    names = sorted({item["audio_name"] for item in items})
    audio = tmp_path / "audios"
    audio.mkdir()
    for seed, name in enumerate(names):
        write_music(audio / name, 4.0, 24000, seed=seed)
    missing = audio / names[-1]
    missing.unlink()

    report = _eval(tmp_path, checkpoint, audio)
    [system] = report  # one object per predictions file
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(records) == len(items) == system["n"]
    assert {r["id"] for r in records} == {f"{item['audio_name']}:{i}" for i, item in enumerate(items)}
    failed = [r for r in records if r["error"]]
    assert {Path(r["audio"]).name for r in failed} == {missing.name}
    assert system["counts"]["failed"] == len(failed) > 0
    assert 0.0 <= system["bleu1"] <= 1.0 and system["profile"] == "standard"

    before = (tmp_path / "answers.jsonl").read_text()
    _eval(tmp_path, checkpoint, audio)  # resume: everything answered (errors included) is kept
    assert (tmp_path / "answers.jsonl").read_text() == before
