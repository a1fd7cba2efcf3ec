"""`musilingo ask` end to end with a tiny real model (MERT-shaped HuBERT + 2-layer Llama) on CPU,
on real audio files the tests write: records, errors, batching, resume after SIGKILL, manifests."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_helpers import write_corrupt, write_empty, write_music, write_text, write_tone
from model_helpers import build_model
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.core.errors import AudioError, ConfigError, DataError
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.data.batching import Clip, encode_clips, length_batches, prepare_clip
from musilingo_cli.data.inputs import item_id
from musilingo_cli.model.adapter import num_audio_tokens
from musilingo_cli.model.checkpoint import save_checkpoint
from musilingo_cli.model.config import CAPTION_INSTRUCTION
from musilingo_cli.pipelines.ask import AskConfig, run

RATE = 24000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny MusiLingo saved as one of our checkpoints (built once for the module)."""
    root = tmp_path_factory.mktemp("tiny")
    model = build_model(root)
    save_checkpoint(root / "ckpt", model.config, model.trainable_state())
    return {"ckpt": str(root / "ckpt"), "llm": str(root / "llm"), "mert": str(root / "mert"), "model": model}


def ask(tiny, tmp_path, **kwargs) -> tuple[dict, list[dict]]:
    """run() with the tiny checkpoint, greedy and short answers unless told otherwise."""
    out = kwargs.pop("output", tmp_path / "answers.jsonl")
    defaults = {"model": tiny["ckpt"], "preset": "greedy", "max_new_tokens": 12, "device": "cpu", "workers": 2}
    summary = run(AskConfig(output=out, **{**defaults, **kwargs}))
    return summary, read_jsonl(out)


def tokens_for(model, seconds: float) -> int:
    """Audio tokens of one unchunked clip, from the encoder's own frame arithmetic."""
    return num_audio_tokens(model.encoder.frames(int(round(seconds * RATE))), model.config.pool_window)


def test_mixed_batch_one_record_per_item_errors_only_where_due(tiny, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_music(d / "a.wav", 5, 24000, seed=1)
    write_music(d / "b.flac", 6, 22050, seed=2)
    write_music(d / "c.mp3", 4, 44100, seed=3)
    write_music(d / "d.ogg", 5, 48000, seed=4)
    write_music(d / "stereo.wav", 8, 44100, seed=5, channels=2)
    write_music(d / "long.flac", 180, 16000, seed=6)
    write_corrupt(d / "corrupt.wav")
    write_empty(d / "empty.mp3")
    paths = [
        str(d / n) for n in ("a.wav", "b.flac", "c.mp3", "d.ogg", "stereo.wav", "long.flac", "corrupt.wav", "empty.mp3")
    ] + [str(d / "missing.wav")]
    summary, records = ask(tiny, tmp_path, inputs=paths, questions=["What genre is this?"], batch_size=4)

    assert [r["audio"] for r in records] != [] and sorted(r["audio"] for r in records) == sorted(paths)
    failed = {Path(r["audio"]).name for r in records if r["error"]}
    assert failed == {"corrupt.wav", "empty.mp3", "missing.wav"}
    assert summary["failed"] == 3 and summary["answered"] == 6
    for r in records:
        assert r["id"] == item_id(r["audio"], "What genre is this?")
        assert r["question"] == "What genre is this?" and r["model"] == tiny["ckpt"]
        assert r["settings"]["preset"] == "greedy" and r["settings"]["max_new_tokens"] == 12
        if r["error"]:
            assert r["answer"] is None and r["error"] and r["audio"] not in r["error"]
        else:
            assert isinstance(r["answer"], str) and r["audio_tokens"] >= 1 and r["seconds"] >= 0
    long = next(r for r in records if r["audio"].endswith("long.flac"))
    model = tiny["model"]
    assert long["audio_seconds_total"] == pytest.approx(180, abs=0.01)
    assert long["audio_seconds_used"] == pytest.approx(180, abs=0.01)
    assert long["audio_tokens"] == 6 * tokens_for(model, 30)  # six 30 s chunks, all heard
    stereo = next(r for r in records if r["audio"].endswith("stereo.wav"))
    assert stereo["audio_seconds_total"] == pytest.approx(8, abs=0.01)
    assert stereo["audio_tokens"] == tokens_for(model, 8)


def test_batched_answers_equal_one_at_a_time_greedy(tiny, tmp_path):
    files = []
    for k, seconds in enumerate([3, 11, 31, 5, 9]):
        files.append(str(tmp_path / f"clip{k}.wav"))
        write_music(files[-1], seconds, 24000, seed=10 + k)
    questions = ["What genre is this?", "Describe the audio in detail."]
    _, alone = ask(
        tiny,
        tmp_path,
        inputs=files,
        questions=questions,
        batch_size=1,
        max_new_tokens=20,
        output=tmp_path / "alone.jsonl",
    )
    _, batched = ask(
        tiny,
        tmp_path,
        inputs=files,
        questions=questions,
        batch_size=8,
        encoder_batch_size=4,
        max_new_tokens=20,
        output=tmp_path / "batched.jsonl",
    )
    assert len(alone) == len(batched) == 10
    one = {r["id"]: (r["answer"], r["audio_tokens"]) for r in alone}
    many = {r["id"]: (r["answer"], r["audio_tokens"]) for r in batched}
    assert one == many
    assert len({a for a, _ in one.values()}) > 1  # the test can tell answers apart


def test_kill_mid_run_then_rerun_completes_without_duplicates(tiny, tmp_path):
    files = []
    for k in range(16):
        files.append(str(tmp_path / f"k{k:02d}.wav"))
        write_music(files[-1], 2, 24000, seed=100 + k)
    out = tmp_path / "answers.jsonl"
    command = [
        sys.executable,
        "-m",
        "musilingo_cli",
        "ask",
        *files,
        "-q",
        "What genre is this?",
        "--model",
        tiny["ckpt"],
        "--preset",
        "greedy",
        "--max-new-tokens",
        "32",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "-o",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_jsonl(out)
    assert 3 <= len(before) < 16

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]
    after = read_jsonl(out)
    ids = [r["id"] for r in after]
    assert sorted(ids) == sorted(item_id(f, "What genre is this?") for f in files)
    assert len(ids) == len(set(ids)) == 16
    assert after[: len(before)] == before  # what was written before the kill is untouched
    assert f"skipped {len(before)}" in done.stderr


def test_manifest_csv_and_jsonl(tiny, tmp_path):
    (tmp_path / "audio").mkdir()
    write_music(tmp_path / "audio" / "one.wav", 4, 24000, seed=1)
    write_music(tmp_path / "audio" / "two.flac", 3, 32000, seed=2)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "path,question,id,reference\naudio/one.wav,What genre is this?,clip-1,Rock.\naudio/two.flac,,clip-2,Jazz.\n"
    )
    _, records = ask(
        tiny, tmp_path, manifest=csv_path, questions=["Describe the audio in detail."], output=tmp_path / "csv.jsonl"
    )
    assert [(r["id"], r["question"], r["extra"]) for r in records] == [
        ("clip-1", "What genre is this?", {"reference": "Rock."}),
        ("clip-2", "Describe the audio in detail.", {"reference": "Jazz."}),
    ]
    assert all(r["error"] is None for r in records)

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"path": "audio/one.wav"}) + "\n" + json.dumps({"path": "audio/none.wav"}) + "\n")
    summary, records = ask(tiny, tmp_path, manifest=jsonl, caption=True, output=tmp_path / "jsonl.jsonl")
    assert [r["question"] for r in records] == [CAPTION_INSTRUCTION] * 2
    one, none = sorted(records, key=lambda r: r["audio"] != "audio/one.wav")
    assert one["id"] == item_id(tmp_path / "audio" / "one.wav", CAPTION_INSTRUCTION)
    assert one["error"] is None and none["error"] == "no such file"
    assert summary["failed"] == 1

    (tmp_path / "noq.csv").write_text("path\naudio/one.wav\n")
    with pytest.raises(DataError, match="no `question`"):
        ask(tiny, tmp_path, manifest=tmp_path / "noq.csv", output=tmp_path / "x.jsonl")


def test_directory_run_is_recursive_and_ignores_non_audio(tiny, tmp_path):
    root = tmp_path / "catalogue"
    (root / "disc1" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    write_music(root / "top.wav", 3, 24000, seed=1)
    write_music(root / "disc1" / "b.FLAC", 3, 24000, seed=2)
    write_music(root / "disc1" / "deep" / "c.ogg", 3, 24000, seed=3)
    write_music(root / ".hidden" / "skip.wav", 3, 24000, seed=4)
    write_text(root / "notes.txt")
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    _, records = ask(tiny, tmp_path, inputs=[str(root)], questions=["What genre is this?"])
    names = sorted(Path(r["audio"]).name for r in records)
    assert names == ["b.FLAC", "c.ogg", "top.wav"]
    assert all(r["error"] is None for r in records)


def test_glob_and_multiple_questions_and_caption(tiny, tmp_path):
    for k in range(2):
        write_music(tmp_path / f"g{k}.wav", 3, 24000, seed=k)
    _, records = ask(
        tiny,
        tmp_path,
        inputs=[str(tmp_path / "g*.wav")],
        questions=["What genre is this?", "What is the tempo?"],
        caption=True,
    )
    assert len(records) == 6 and len({r["id"] for r in records}) == 6
    asked = sorted((Path(r["audio"]).name, r["question"]) for r in records)
    assert asked == sorted(
        (f"g{k}.wav", q) for k in range(2) for q in ["What genre is this?", "What is the tempo?", CAPTION_INSTRUCTION]
    )


def test_max_seconds_limits_audio_and_long_audio_is_chunked(tiny, tmp_path):
    song = tmp_path / "song.flac"
    write_music(song, 75, 24000, seed=7)
    model = tiny["model"]
    _, full = ask(tiny, tmp_path, inputs=[str(song)], questions=["What genre is this?"], output=tmp_path / "full.jsonl")
    assert full[0]["audio_tokens"] == 2 * tokens_for(model, 30) + tokens_for(model, 15)
    _, cut = ask(
        tiny,
        tmp_path,
        inputs=[str(song)],
        questions=["What genre is this?"],
        max_seconds=40,
        chunk_seconds=20,
        output=tmp_path / "cut.jsonl",
    )
    assert cut[0]["audio_seconds_used"] == pytest.approx(40) and cut[0]["audio_seconds_total"] == pytest.approx(75)
    assert cut[0]["audio_tokens"] == 2 * tokens_for(model, 20)


def test_silent_file_is_an_error_record(tiny, tmp_path):
    write_tone(tmp_path / "quiet.wav", 2, 24000, amplitude=0.0)
    summary, records = ask(tiny, tmp_path, inputs=[str(tmp_path / "quiet.wav")], questions=["What genre is this?"])
    assert "silent" in records[0]["error"] and summary["failed"] == 1


def test_retry_errors_answers_fixed_files_and_keeps_one_record_per_id(tiny, tmp_path):
    late = tmp_path / "late.wav"
    write_music(tmp_path / "ok.wav", 2, 24000, seed=1)
    inputs = [str(tmp_path / "ok.wav"), str(late)]
    summary, first = ask(tiny, tmp_path, inputs=inputs, questions=["What genre is this?"])
    assert summary["failed"] == 1
    write_music(late, 2, 24000, seed=2)
    summary, again = ask(tiny, tmp_path, inputs=inputs, questions=["What genre is this?"])
    assert summary["skipped_done"] == 2 and summary["failed_before"] == 1 and again == first
    summary, fixed = ask(tiny, tmp_path, inputs=inputs, questions=["What genre is this?"], retry_errors=True)
    assert summary["answered"] == 1 and len(fixed) == 2 and all(r["error"] is None for r in fixed)


def test_official_preset_records_seed(tiny, tmp_path):
    write_music(tmp_path / "s.wav", 2, 24000, seed=1)
    _, records = ask(
        tiny, tmp_path, inputs=[str(tmp_path / "s.wav")], questions=["What genre is this?"], preset="official", seed=123
    )
    assert records[0]["seed"] == 123 and records[0]["settings"]["do_sample"] is True


# --- the command line -----------------------------------------------------------------------------

runner = CliRunner()


def test_cli_single_file_prints_just_the_answer(tiny, tmp_path):
    write_music(tmp_path / "song.wav", 3, 24000, seed=1)
    args = [
        "ask",
        str(tmp_path / "song.wav"),
        "What genre is this?",
        "--model",
        tiny["ckpt"],
        "--preset",
        "greedy",
        "--max-new-tokens",
        "12",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    _, records = ask(tiny, tmp_path, inputs=[str(tmp_path / "song.wav")], questions=["What genre is this?"])
    assert result.stdout == records[0]["answer"] + "\n"


def test_cli_json_lines_parse_and_exit_code_says_failure(tiny, tmp_path):
    write_music(tmp_path / "a.wav", 2, 24000, seed=1)
    args = [
        "ask",
        str(tmp_path / "a.wav"),
        str(tmp_path / "gone.mp3"),
        "-q",
        "What genre is this?",
        "--json",
        "--model",
        tiny["ckpt"],
        "--preset",
        "greedy",
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {Path(r["audio"]).name: r["error"] for r in records} == {"a.wav": None, "gone.mp3": "no such file"}
    assert "gone.mp3: no such file" in result.stderr
    assert "--retry-errors" not in result.stderr  # without -o there is no file to retry into


def test_cli_many_files_print_tab_separated_lines(tiny, tmp_path):
    for name in ("x.wav", "y.wav"):
        write_music(tmp_path / name, 2, 24000, seed=len(name))
    result = runner.invoke(
        app,
        [
            "ask",
            str(tmp_path / "x.wav"),
            str(tmp_path / "y.wav"),
            "What genre is this?",
            "--model",
            tiny["ckpt"],
            "--preset",
            "greedy",
            "--max-new-tokens",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(Path(a).name, q) for a, q, _ in lines] == [
        ("x.wav", "What genre is this?"),
        ("y.wav", "What genre is this?"),
    ]


def test_cli_fresh_adapter_warns_once(tiny, tmp_path):
    for name in ("p.wav", "q.wav"):
        write_music(tmp_path / name, 2, 24000, seed=len(name))
    result = runner.invoke(
        app,
        [
            "ask",
            str(tmp_path),
            "--caption",
            "--encoder",
            tiny["mert"],
            "--llm",
            tiny["llm"],
            "--max-new-tokens",
            "4",
            "--batch-size",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.count("freshly initialised adapter") == 1
    assert len(result.stdout.splitlines()) == 2


def test_cli_usage_errors(tiny, tmp_path):
    write_music(tmp_path / "a.wav", 1, 24000)
    no_question = runner.invoke(app, ["ask", str(tmp_path / "a.wav"), "--model", tiny["ckpt"]])
    assert isinstance(no_question.exception, ConfigError) and no_question.exception.exit_code == 2
    file_last = runner.invoke(app, ["ask", str(tmp_path / "a.wav"), str(tmp_path / "a.wav"), "--model", tiny["ckpt"]])
    assert "is a file, not a question" in str(file_last.exception)
    nothing = runner.invoke(app, ["ask", "-q", "Why?", "--model", tiny["ckpt"]])
    assert "nothing to answer" in str(nothing.exception)


# --- the batching parts -------------------------------------------------------------------------------


def test_encode_clips_batches_equal_lengths_only_and_matches_one_by_one(tiny, tmp_path):
    model = tiny["model"]
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(s * RATE)).astype(np.float32) * 0.1 for s in (2.5, 6.2, 4.0, 2.5)]
    clips = [Clip([w[i : i + 2 * RATE] for i in range(0, len(w), 2 * RATE)], 0, 0) for w in waves]
    seen = []

    def encode(batch: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(batch.shape))
        return model.encode(batch)

    features = encode_clips(encode, clips, batch_size=3)
    full = sum(len(c.chunks) - 1 for c in clips) + sum(len(c.chunks[-1]) == 2 * RATE for c in clips)
    assert sum(b for b, _ in seen if _ == 2 * RATE) == full  # full chunks went together
    assert max(b for b, _ in seen) == 3
    for clip, feats in zip(clips, features):
        alone = torch.cat([model.encode(torch.from_numpy(c[None]))[0] for c in clip.chunks], dim=-2)
        torch.testing.assert_close(feats, alone, rtol=1e-4, atol=1e-5)


def test_prepare_clip_crops_and_refuses_silence(tmp_path):
    write_music(tmp_path / "m.wav", 5, 44100)
    clip = prepare_clip(str(tmp_path / "m.wav"), RATE, chunk_seconds=2, max_seconds=4.5)
    assert [len(c) for c in clip.chunks] == [2 * RATE, int(2.5 * RATE)]  # a 0.5 s tail joins the last chunk
    assert clip.seconds_total == pytest.approx(5) and clip.seconds_used == pytest.approx(4.5)
    write_tone(tmp_path / "z.wav", 1, RATE, amplitude=0.0)
    with pytest.raises(AudioError, match="silent"):
        prepare_clip(str(tmp_path / "z.wav"), RATE, 30, None)


def test_length_batches_sorts_and_splits():
    assert length_batches([5, 1, 3, 1, 9], 2) == [[1, 3], [2, 0], [4]]
    assert math.prod(len(b) for b in length_batches([1] * 7, 3)) == 3 * 3 * 1
