"""`musilingo ask` never stops early (issue 11): any one item's failure is that item's record, a prompt
over the LLM's context is refused per item, the output file has one writer and keeps every record."""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal

import pytest
import soundfile as sf
import torch
from audio_helpers import HAVE_FFMPEG, write_music, write_vbr_mp3_without_xing
from model_helpers import build_model

from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.core.journal import Journal, JournalWriteError, read_jsonl
from musilingo_cli.model.checkpoint import save_checkpoint
from musilingo_cli.model.context import PromptTooLong, check_prompt, context_length
from musilingo_cli.pipelines.ask import AskConfig, run

Q = "What genre is this?"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    model = build_model(root)
    save_checkpoint(root / "ckpt", model.config, model.trainable_state())
    short = root / "llm-128"  # the same tiny LLM with a 128-position context
    shutil.copytree(root / "llm", short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 128}))
    return {
        "ckpt": str(root / "ckpt"),
        "llm": str(root / "llm"),
        "mert": str(root / "mert"),
        "model": model,
        "short_llm": str(short),
    }


def ask(tiny, out, model=None, **kwargs):
    defaults = {"model": tiny["ckpt"], "preset": "greedy", "max_new_tokens": 8, "device": "cpu", "workers": 2}
    summary = run(AskConfig(output=out, **{**defaults, **kwargs}), model=model)
    return summary, {r["audio"].rsplit("/", 1)[-1]: r for r in read_jsonl(out)}


def files(tmp_path, names, seconds=2):
    paths = []
    for k, name in enumerate(names):
        paths.append(str(tmp_path / name))
        write_music(paths[-1], seconds + k % 3, 24000, seed=k)
    return paths


def test_decoder_exceptions_of_any_kind_are_records_and_the_run_goes_on(tiny, tmp_path, monkeypatch):
    paths = files(tmp_path, ["a.wav", "eio.wav", "b.wav", "oom.wav", "lib.wav", "c.wav"])

    class LibraryError(Exception):  # raised by a decoder library, not wrapped in ours
        pass

    faults = {
        "eio.wav": OSError(5, "Input/output error"),
        "oom.wav": MemoryError("cannot allocate"),
        "lib.wav": LibraryError("unexpected frame"),
    }
    real_read = sf.read

    def failing_read(file, *args, **kwargs):  # the network mount / decoder failing on three files
        name = str(file).rsplit("/", 1)[-1]
        if name in faults:
            raise faults[name]
        return real_read(file, *args, **kwargs)

    monkeypatch.setattr("musilingo_cli.model.audio.sf.read", failing_read)
    summary, records = ask(tiny, tmp_path / "out.jsonl", model=tiny["model"], inputs=paths, questions=[Q], batch_size=2)
    assert sorted(records) == sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert records["eio.wav"]["error"] == "OSError: [Errno 5] Input/output error"
    assert records["oom.wav"]["error"] == "MemoryError: cannot allocate"
    assert records["lib.wav"]["error"] == "LibraryError: unexpected frame"
    assert all(records[n]["answer"] for n in ("a.wav", "b.wav", "c.wav"))
    assert summary["answered"] == 3 and summary["failed"] == 3


def test_encoder_out_of_memory_retries_smaller_and_one_bad_clip_is_its_record(tiny, tmp_path, monkeypatch):
    paths = [str(tmp_path / f"{name}.wav") for name in "abcdefgh"]
    for k, path in enumerate(paths):
        write_music(path, 2, 24000, seed=k)  # eight equal lengths: one encoder batch of 8
    write_music(tmp_path / "odd.wav", 3.7, 24000, seed=9)  # a length no other file has
    paths.append(str(tmp_path / "odd.wav"))
    model = tiny["model"]
    _, clean = ask(tiny, tmp_path / "clean.jsonl", model=model, inputs=paths, questions=[Q], encoder_batch_size=8)
    real_encode = model.encode
    sizes = []

    def encode(waves: torch.Tensor) -> torch.Tensor:
        sizes.append(waves.shape[0])
        if waves.shape[0] > 1:  # a long file's window does not fit the accelerator at this batch size
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if waves.shape[1] == round(3.7 * 24000):
            raise ValueError("input contains NaN")
        return real_encode(waves)

    monkeypatch.setattr(model, "encode", encode)
    summary, faulty = ask(
        tiny, tmp_path / "faulty.jsonl", model=model, inputs=paths, questions=[Q], encoder_batch_size=8
    )
    assert faulty["odd.wav"]["error"] == "encoding failed: ValueError: input contains NaN"
    assert faulty["odd.wav"]["audio_seconds_used"] == pytest.approx(3.7)
    others = [n for n in clean if n != "odd.wav"]
    assert {n: faulty[n]["answer"] for n in others} == {n: clean[n]["answer"] for n in others}
    assert 8 in sizes and 4 in sizes and 2 in sizes and 1 in sizes  # halved down before going clip by clip
    assert summary["answered"] == 8 and summary["failed"] == 1


def test_generation_failure_of_one_item_spares_its_batch(tiny, tmp_path, monkeypatch):
    paths = files(tmp_path, ["a.wav", "b.wav", "c.wav"])
    model = tiny["model"]
    real_generate = model.generate

    def generate(features, questions, *args, **kwargs):
        if "Boom?" in questions:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real_generate(features, questions, *args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    summary, _ = ask(tiny, tmp_path / "out.jsonl", model=model, inputs=paths, questions=[Q, "Boom?"], batch_size=6)
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 6
    assert {r["error"] for r in records if r["question"] == "Boom?"} == {
        "generation failed: RuntimeError: CUDA error: device-side assert triggered"
    }
    assert all(r["answer"] for r in records if r["question"] == Q)
    assert summary["answered"] == 3 and summary["failed"] == 3


def test_prompt_over_the_llm_context_is_an_error_record_naming_the_fix(tiny, tmp_path):
    long_song, short_song = tmp_path / "long.flac", tmp_path / "short.wav"
    write_music(long_song, 200, 24000, seed=1)  # 7 chunks: 47 audio tokens with MERT's frames and pooling
    write_music(short_song, 3, 24000, seed=2)
    inputs = [str(long_song), str(short_song)]
    summary, records = ask(
        tiny, tmp_path / "out.jsonl", inputs=inputs, questions=[Q], llm=tiny["short_llm"], max_new_tokens=80
    )
    error = records["long.flac"]["error"]
    assert error.startswith("prompt too long for the LLM: 47 audio + ") and "over its context of 128" in error
    assert records["long.flac"]["audio_tokens"] == 47 and records["long.flac"]["answer"] is None
    assert records["short.wav"]["answer"] is not None and summary["failed"] == 1
    # the --max-seconds the error suggests is one that fits
    suggested = float(re.search(r"--max-seconds (\d+)", error).group(1))
    summary, again = ask(
        tiny,
        tmp_path / "again.jsonl",
        inputs=[str(long_song)],
        questions=[Q],
        llm=tiny["short_llm"],
        max_new_tokens=80,
        max_seconds=suggested,
    )
    assert again["long.flac"]["error"] is None and again["long.flac"]["audio_seconds_used"] == suggested


def test_a_400_kb_question_is_one_error_record_and_its_batch_mates_are_answered(tiny, tmp_path):
    paths = files(tmp_path, ["a.wav", "b.wav"])
    huge = "Why " * 100_000  # 400 kB
    summary, _ = ask(tiny, tmp_path / "out.jsonl", inputs=paths, questions=[Q, huge], batch_size=4)
    records = read_jsonl(tmp_path / "out.jsonl")
    bad = [r for r in records if r["question"] == huge]
    assert len(records) == 4 and len(bad) == 2
    assert all("over its context of 512" in r["error"] and "shorten the question" in r["error"] for r in bad)
    assert all(r["answer"] for r in records if r["question"] == Q) and summary["failed"] == 2


def test_check_prompt_limits():
    check_prompt(2048, 1700, 40, 300)  # fits exactly
    with pytest.raises(PromptTooLong, match=r"2520 audio .* over its context of 2048; pass --max-seconds 7315 "):
        check_prompt(2048, 2520, 40, 300, audio_seconds=3 * 3600.0)
    check_prompt(None, 10**6, 10**6, 300)  # no known limit: nothing to check

    class Config:
        max_position_embeddings = 2048

    class LLM:
        config = Config()

    assert context_length(LLM()) == 2048


@pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg")
def test_vbr_mp3_without_xing_records_the_seconds_heard(tiny, tmp_path):
    write_vbr_mp3_without_xing(tmp_path / "quiet.mp3", 25.0, quiet_seconds=6.0)
    _, records = ask(tiny, tmp_path / "out.jsonl", inputs=[str(tmp_path / "quiet.mp3")], questions=[Q])
    record = records["quiet.mp3"]
    assert record["error"] is None
    assert abs(record["audio_seconds_used"] - 25.0) < 0.08 and abs(record["audio_seconds_total"] - 25.0) < 0.08


# --- the output file --------------------------------------------------------------------------------


def test_a_second_writer_of_the_same_output_is_refused(tiny, tmp_path):
    paths = files(tmp_path, ["a.wav"])
    out = tmp_path / "out.jsonl"
    with Journal(out, key=lambda r: r["id"], lock=True):
        with pytest.raises(ConfigError, match="another process is writing this file") as info:
            ask(tiny, out, inputs=paths, questions=[Q])
        assert "\n" not in str(info.value)
    summary, records = ask(tiny, out, inputs=paths, questions=[Q])  # released: the run goes ahead
    assert summary["answered"] == 1 and len(records) == 1


def test_a_last_record_without_its_newline_is_kept_not_answered_again(tiny, tmp_path):
    paths = files(tmp_path, ["a.wav", "b.wav"])
    out = tmp_path / "out.jsonl"
    ask(tiny, out, inputs=paths, questions=[Q])
    whole = out.read_bytes()
    out.write_bytes(whole.rstrip(b"\n"))  # a valid last record that lost only its line break
    summary, _ = ask(tiny, out, inputs=paths, questions=[Q])
    assert summary["skipped_done"] == 2 and summary["answered"] == 0
    assert out.read_bytes() == whole
    out.write_bytes(whole[:-20])  # a torn one is cut and answered again
    summary, _ = ask(tiny, out, inputs=paths, questions=[Q])
    assert summary["skipped_done"] == 1 and summary["answered"] == 1 and len(read_jsonl(out)) == 2


@pytest.mark.parametrize("content", ["[1, 2]\n", '{"answer": "no id"}\n', '"text"\n'])
def test_an_output_file_of_another_shape_is_one_line(tiny, tmp_path, content):
    paths = files(tmp_path, ["a.wav"])
    out = tmp_path / "other.jsonl"
    out.write_text(content)
    with pytest.raises(DataError, match=r"record 1 .* is not a record of this output file") as info:
        ask(tiny, out, inputs=paths, questions=[Q])
    assert "\n" not in str(info.value) and out.read_text() == content


def test_output_naming_a_folder_is_one_line(tiny, tmp_path):
    paths = files(tmp_path, ["a.wav"])
    with pytest.raises(ConfigError, match="cannot write the output file here") as info:
        ask(tiny, tmp_path, inputs=paths, questions=[Q])
    assert "\n" not in str(info.value)


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path):
    out = tmp_path / "out.jsonl"
    record = {"id": "x", "answer": "a" * 200}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    journal = Journal(out, key=lambda r: r["id"], lock=True)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
        with pytest.raises(JournalWriteError) as info:
            for k in range(100):
                journal.append({**record, "id": str(k)}, sync=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
        journal.close()
    message = str(info.value)
    assert "\n" not in message and "File too large" in message and "records before it are kept" in message
    with Journal(out, key=lambda r: r["id"]) as again:  # the torn tail is repaired, the rest kept
        assert [r["id"] for r in again.records] == [str(k) for k in range(len(again.records))]
        assert len(again.records) >= 2000 // len(json.dumps(record) + "\n")  # every one that fitted


def test_fresh_adapter_is_seeded_so_identical_runs_agree(tiny, tmp_path):
    from musilingo_cli.pipelines.ask import load_for

    def adapter(seed: int) -> dict[str, torch.Tensor]:
        config = AskConfig(
            encoder=tiny["mert"], llm=tiny["llm"], device="cpu", dtype="fp32", encoder_dtype="fp32", seed=seed
        )
        return load_for(config).trainable_state()

    torch.manual_seed(123)  # whatever the global generator holds before: the seed decides
    first = adapter(7)
    torch.rand(5)
    again, other = adapter(7), adapter(8)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["proj.weight"], other["proj.weight"])
    paths = files(tmp_path, [f"s{k}.wav" for k in range(4)])
    plain = {"model": None, "encoder": tiny["mert"], "llm": tiny["llm"], "max_new_tokens": 10, "seed": 7}
    runs = [ask(tiny, tmp_path / f"run{k}.jsonl", inputs=paths, questions=[Q], **plain)[1] for k in range(2)]
    assert [{n: r["answer"] for n, r in records.items()} for records in runs][0] == {
        n: r["answer"] for n, r in runs[1].items()
    }


def test_ctrl_c_stops_at_once_and_keeps_what_was_written(tiny, tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    paths = files(tmp_path, [f"k{k:02d}.wav" for k in range(40)])
    out = tmp_path / "answers.jsonl"
    command = [sys.executable, "-m", "musilingo_cli", "ask", *paths, "-q", Q, "--model", tiny["ckpt"],
               "--preset", "greedy", "--max-new-tokens", "32", "--batch-size", "1", "--workers", "2",
               "--device", "cpu", "-o", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out.exists() and out.read_bytes().count(b"\n") >= 2):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1].decode()  # it ends: no thread keeps it alive
    assert proc.returncode == 130 and "interrupted" in stderr, stderr[-2000:]
    kept = read_jsonl(out)
    assert 2 <= len(kept) < 40 and all(r["answer"] for r in kept)
    assert out.read_bytes().endswith(b"\n")
