"""The README's Python example: `musilingo_cli.answer` does exactly what `musilingo ask` does,
chunking of long audio included."""

from __future__ import annotations

import json

from audio_helpers import write_music
from model_helpers import build_model
from typer.testing import CliRunner

import musilingo_cli
from musilingo_cli.cli import app
from musilingo_cli.model.checkpoint import save_checkpoint


def test_answer_equals_ask_on_a_long_song_in_input_order(tmp_path):
    model = build_model(tmp_path)
    save_checkpoint(tmp_path / "ckpt", model.config, model.trainable_state())
    write_music(tmp_path / "b_long.wav", 7, 24000, seed=1)  # 7 s in 3 s chunks: three chunks joined
    write_music(tmp_path / "a_short.wav", 2, 24000, seed=2)
    files = [str(tmp_path / "b_long.wav"), str(tmp_path / "a_short.wav")]
    options = {"preset": "greedy", "max_new_tokens": 10, "device": "cpu", "chunk_seconds": 3.0}

    records = musilingo_cli.answer(files, "What genre is this?", model=str(tmp_path / "ckpt"), **options)

    args = [
        "ask",
        *files,
        "What genre is this?",
        "--model",
        str(tmp_path / "ckpt"),
        "--json",
        "--preset",
        "greedy",
        "--max-new-tokens",
        "10",
        "--device",
        "cpu",
        "--chunk-seconds",
        "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cli = {r["id"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert [r["audio"] for r in records] == files
    assert [r["answer"] for r in records] == [cli[r["id"]]["answer"] for r in records]
    assert records[0]["audio_seconds_used"] > 6.9 and not records[0]["error"]
