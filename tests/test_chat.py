"""`musilingo chat`: the two prompt templates as the spec spells them, context trimming that keeps
the audio, and the command through standard input with a tiny real model (answers compared with
`ask`'s and with transformers' `generate` for the two-turn prompt)."""

from __future__ import annotations

import json

import pytest
import torch
from audio_helpers import write_music
from serve_helpers import tiny_checkpoint
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.core.errors import AudioError, ConfigError
from musilingo_cli.model.context import PromptTooLong
from musilingo_cli.model.generation import GenerationSettings, postprocess
from musilingo_cli.model.live_batch import embed_rows
from musilingo_cli.model.loader import load_model
from musilingo_cli.pipelines.ask import AskConfig
from musilingo_cli.pipelines.ask import run as ask_run
from musilingo_cli.pipelines.chat import DEMO_SYSTEM, Audio, Message, encode_file, render, segments

Q1, Q2, A1 = "What genre is this?", "What instruments are playing?", "It is rock."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    ckpt = tiny_checkpoint(root)
    write_music(root / "song.wav", 6, 24000, seed=3)
    return {"root": root, "ckpt": ckpt, "model": load_model(str(ckpt)), "song": root / "song.wav"}


def conversation(audio: Audio) -> list[Message]:
    return [Message("user", audio), Message("user", Q1), Message("assistant", A1), Message("user", Q2)]


def test_default_template_is_the_stage2_prompt_then_appends_turns(tiny):
    audio = Audio(torch.zeros(3, 8), "song.wav")
    assert segments(conversation(audio), "default", tiny["model"].config) == [
        "###Human: <Audio>",
        audio,
        f"</Audio> {Q1} ###Assistant: {A1}######Human: {Q2} ###Assistant: ",
    ]
    first = render(tiny["model"], conversation(audio)[:2])
    assert first.ids == tiny["model"].token_row(3, Q1, None)[0]  # token for token what ask builds


def test_demo_template_reproduces_the_official_demo_and_its_second_human_turn(tiny):
    audio = Audio(torch.zeros(3, 8), "song.wav")
    assert segments(conversation(audio), "demo", tiny["model"].config) == [
        DEMO_SYSTEM + "###Human: <Audio>",
        audio,
        f"</Audio>###Human: {Q1}###Assistant: {A1}###Human: {Q2}###Assistant:",
    ]


def test_audio_added_later_goes_into_the_next_question(tiny):
    a, b = Audio(torch.zeros(2, 8), "a.wav"), Audio(torch.zeros(1, 8), "b.wav")
    messages = [
        Message("user", a),
        Message("user", Q1),
        Message("assistant", A1),
        Message("user", b),
        Message("user", Q2),
    ]
    assert segments(messages, "default", tiny["model"].config) == [
        "###Human: <Audio>",
        a,
        f"</Audio> {Q1} ###Assistant: {A1}######Human: <Audio>",
        b,
        f"</Audio> {Q2} ###Assistant: ",
    ]


def test_a_long_history_drops_the_oldest_exchanges_never_the_audio(tiny):
    audio = Audio(torch.zeros(20, 8), "song.wav")
    messages = [Message("user", audio)]
    for k in range(6):
        messages += [Message("user", f"Question {k}: {Q1}"), Message("assistant", f"Answer {k}: {A1}")]
    messages.append(Message("user", Q2))
    full = render(tiny["model"], messages)
    cut = render(tiny["model"], messages, context=len(full.ids) - 10)
    assert cut.trimmed and not full.trimmed and len(cut.ids) <= len(full.ids) - 10
    assert cut.audio == [audio] and cut.ids.count(-1) == 20
    text = tiny["model"].tokenizer.decode([i for i in cut.ids if i >= 0])
    assert "Question 0" not in text and Q2 in text and "Answer 5" in text
    with pytest.raises(PromptTooLong, match="over its context of 25; pass a smaller --max-seconds"):
        render(tiny["model"], messages, context=25)


def test_chat_through_stdin_two_questions_two_answers_history_kept(tiny, tmp_path):
    saved, after_reset = tmp_path / "talk.json", tmp_path / "reset.json"
    lines = f"{Q1}\n{Q2}\n/save {saved}\n/reset\n{Q2}\n/save {after_reset}\n/quit\nnever asked\n"
    result = CliRunner().invoke(
        app,
        [
            "chat",
            str(tiny["song"]),
            "--model",
            str(tiny["ckpt"]),
            "--preset",
            "greedy",
            "--max-new-tokens",
            "12",
            "--device",
            "cpu",
        ],
        input=lines,
    )
    assert result.exit_code == 0, result.output
    answers = result.stdout.strip().splitlines()
    assert len(answers) == 3

    records = []
    ask_run(
        AskConfig(
            inputs=[str(tiny["song"])],
            questions=[Q1],
            model=str(tiny["ckpt"]),
            preset="greedy",
            max_new_tokens=12,
            device="cpu",
            on_record=records.append,
        )
    )
    assert answers[0] == records[0]["answer"]

    model = tiny["model"]
    audio = encode_file(model, str(tiny["song"]))
    prompt = render(
        model, [Message("user", audio), Message("user", Q1), Message("assistant", answers[0]), Message("user", Q2)]
    )
    embeds, mask = embed_rows(model, [(prompt.ids, [audio.features])])
    out = model._transformers_generate(embeds, mask, GenerationSettings.from_preset("greedy", max_new_tokens=12))
    assert answers[1] == postprocess(model.tokenizer.decode(out[0], skip_special_tokens=True), "###")

    talk = json.loads(saved.read_text())
    assert talk["template"] == "default" and [m.get("content") for m in talk["messages"]] == [
        None,
        Q1,
        answers[0],
        Q2,
        answers[1],
    ]
    assert talk["messages"][0] == {"role": "user", "audio": "song.wav"}
    assert [m.get("content") for m in json.loads(after_reset.read_text())["messages"]] == [None, Q2, answers[2]]


def test_chat_with_a_bad_file_is_one_error_line(tiny, tmp_path):
    (tmp_path / "notes.wav").write_text("not audio\n" * 50)
    result = CliRunner().invoke(
        app, ["chat", str(tmp_path / "notes.wav"), "--model", str(tiny["ckpt"]), "--device", "cpu"], input="Genre?\n"
    )
    assert result.exit_code != 0 and isinstance(result.exception, Exception)
    assert "notes.wav" in str(result.exception)


def test_interactive_chat_streams_answers_after_prompts(tiny):
    import io

    from musilingo_cli.pipelines.chat import ChatConfig, run

    out = io.StringIO()
    config = ChatConfig(
        audio=str(tiny["song"]),
        preset="greedy",
        max_new_tokens=12,
        device="cpu",
        lines=[Q1, "/help", Q2],
        interactive=True,
        out=out,
    )
    assert run(config, model=tiny["model"]) == 2
    text = out.getvalue()
    assert text.count("you> ") == 4 and text.count("musilingo> ") == 2  # the last prompt meets end of input
    answers = [line.split("musilingo> ")[1] for line in text.splitlines() if "musilingo> " in line]
    assert all(answers) and len(answers) == 2


def test_serve_and_chat_refuse_a_missing_model(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "musilingo_cli", "serve"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--model" in lines[0] and "Traceback" not in done.stderr
    song = tmp_path / "song.wav"
    write_music(song, 2, 24000, seed=1)
    result = CliRunner().invoke(app, ["chat", str(song)])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError) and "--model" in str(result.exception)


def test_chat_refuses_a_missing_file_before_any_model_is_looked_for(tmp_path):
    missing = tmp_path / "nope.wav"
    result = CliRunner().invoke(app, ["chat", str(missing), "--model", str(tmp_path / "no-such-run")])
    assert result.exit_code != 0 and isinstance(result.exception, AudioError), result.output
    assert str(result.exception).startswith(f"{missing}: no such file; check the path")


def test_add_puts_a_second_file_in_the_next_turn_and_audio_switches(tiny, tmp_path):
    from musilingo_cli.model.live_batch import Engine
    from musilingo_cli.pipelines.chat import Chat, _command

    other = tmp_path / "other.wav"
    write_music(other, 9, 24000, seed=4)
    engine = Engine(tiny["model"], max_batch=1)
    try:
        chat = Chat(tiny["model"], engine, GenerationSettings.from_preset("greedy", max_new_tokens=6))
        chat.add_audio(str(tiny["song"]))
        chat.ask(Q1)
        _command(chat, f"/add {other}")
        chat.ask(Q2)
        assert [a.name for a in chat.last_prompt.audio] == ["song.wav", "other.wav"]
        _command(chat, f"/audio {other}")
        chat.ask(Q1)
        assert [a.name for a in chat.last_prompt.audio] == ["other.wav"] and len(chat.messages) == 3
    finally:
        engine.close()


def test_save_into_a_missing_folder_names_the_users_file_and_the_fix(tiny, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    target = tmp_path / "no-such-folder" / "talk.json"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("musilingo")), "chat", str(tiny["song"]), "--model", str(tiny["ckpt"])],
        input=f"/save {target}\n/bogus\n{Q1}\n/quit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    # piped, a failed line lets the rest run, then the command exits 1 so that a script notices
    assert done.returncode == 1 and len(done.stdout.splitlines()) == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {target}: No such file or directory; the folder {target.parent} does not exist: create it first, "
        "or choose another path",
        "error: /bogus is not a command here; commands: /audio FILE, /add FILE, /reset, /save FILE, /quit",
        "error: 2 of the piped lines failed (each error is shown above); 1 answered",
    ], done.stderr
    assert ".tmp" not in done.stderr


def test_save_onto_a_folder_names_the_users_path_not_a_temporary_file(tmp_path):
    from musilingo_cli.core.errors import os_error_message
    from musilingo_cli.core.journal import atomic_write_text

    with pytest.raises(IsADirectoryError) as caught:
        atomic_write_text(tmp_path, "{}")
    assert os_error_message(caught.value) == f"{tmp_path}: Is a directory; that is a folder: give a file name inside it"
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.endswith(".tmp")] == []
