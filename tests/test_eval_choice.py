"""`musilingo eval` on the multiple-choice splits end to end: MMAU- and MuChoMusic-shaped files that
carry the outputs, ask's JSONL joined by id with --data, and --model answering through `ask`."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.core.errors import ConfigError, DataError

runner = CliRunner()

VOICES = ["Man", "Woman", "Child", "Robot"]
MMAU = [
    # id, task, choices, answer, category, difficulty, model_output
    ("s1", "sound", VOICES, "Man", "Reasoning", "easy", "Man"),
    ("m1", "music", ["Piano", "Guitar", "Violin", "Drums"], "Guitar", "Reasoning", "easy", "(B) Guitar"),
    ("m2", "music", ["Fast", "Slow", "Medium", "Varying"], "Slow", "Perception", "hard", "It is fast."),
    ("m3", "music", ["Jazz", "Rock", "Pop", "Blues"], "Jazz", "Perception", "medium", "B"),
    ("m4", "music", ["Major", "Minor"], "Minor", "Knowledge", "hard", "minor key"),
]


def _mmau_records(with_outputs=True):
    rows = []
    for id_, task, choices, answer, category, difficulty, output in MMAU:
        row = {
            "id": id_,
            "audio_id": f"./test-mini-audios/{id_}.wav",
            "question": f"Question {id_}?",
            "choices": choices,
            "answer": answer,
            "dataset": "x",
            "task": task,
            "split": "test-mini",
            "category": category,
            "sub-category": f"{category} sub",
            "difficulty": difficulty,
        }
        if with_outputs:
            row["model_output"] = output
        rows.append(row)
    return rows


def _eval(*args):
    result = runner.invoke(app, ["eval", *map(str, args), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_mmau_music_file_with_outputs(tmp_path):
    path = tmp_path / "mmau-test-mini-with-outputs.json"
    path.write_text(json.dumps(_mmau_records()))
    [system] = _eval("--split", "mmau-music", "--predictions", path, "--prediction-field", "model_output")
    # music items: m1 right, m2 wrong (names "Fast"), m3 unanswered ("B" names no option), m4 right
    assert (system["n"], system["correct"], system["unanswered"]) == (4, 2, 1)
    assert system["accuracy"] == 0.5 and system["unanswered_rate"] == 0.25
    assert system["random_choice"] == pytest.approx((0.25 * 3 + 0.5) / 4)
    assert system["first_choice"] == 0.25  # only m3 lists its answer first
    assert "string_match" in system["rule"]
    assert system["breakdowns"]["difficulty"]["hard"] == {
        "n": 2,
        "correct": 1,
        "accuracy": 0.5,
        "unanswered": 0,
        "unanswered_rate": 0.0,
        "no_output": 0,
        "random_choice": 0.375,
        "first_choice": 0.0,
    }
    assert set(system["breakdowns"]) == {"task", "category", "sub-category", "difficulty"}
    rows = [json.loads(line) for line in Path(system["per_item"]).read_text().splitlines()]
    assert [r["chosen"] for r in rows] == ["B", "A", None, "B"]

    [everything] = _eval("--split", "mmau", "--predictions", path, "--prediction-field", "model_output")
    assert everything["n"] == 5 and everything["correct"] == 3


def test_mmau_markdown_names_rule_and_baselines(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(json.dumps(_mmau_records()))
    result = runner.invoke(
        app,
        [
            "eval",
            "--split",
            "mmau-music",
            "--predictions",
            str(path),
            "--prediction-field",
            "model_output",
            "--format",
            "markdown",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "string_match" in result.stdout and "| random choice | always first |" in result.stdout
    assert "difficulty: hard (n=2)" in result.stdout
    table = runner.invoke(
        app, ["eval", "--split", "mmau-music", "--predictions", str(path), "--prediction-field", "model_output"]
    )
    assert table.exit_code == 0 and "accuracy (official rule)" in table.stdout


def test_ask_jsonl_joined_by_id_with_data(tmp_path):
    data = tmp_path / "mmau-test-mini.json"
    data.write_text(json.dumps(_mmau_records(with_outputs=False)))
    answers = tmp_path / "answers.jsonl"
    lines = [
        {"id": "m1", "answer": "Guitar", "error": None},
        {"id": "m2", "answer": None, "error": "audio missing"},
        {"id": "m4", "answer": "It is in a minor key", "error": None},
    ]
    answers.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    [system] = _eval("--split", "mmau-music", "--data", data, "--predictions", answers)
    assert (system["n"], system["correct"], system["no_output"], system["unanswered"]) == (4, 2, 2, 2)
    assert any("have no answer in this file" in note for note in system["notes"])
    assert any("official script skips" in note and "1.0000" in note for note in system["notes"])

    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"id": "nope", "answer": "x"}) + "\n")
    result = runner.invoke(app, ["eval", "--split", "mmau-music", "--data", str(data), "--predictions", str(stray)])
    assert result.exit_code != 0 and "match no item" in str(result.exception)
    whole = tmp_path / "whole.jsonl"  # answers for the whole file: the non-music ones are not in mmau-music
    whole.write_text(json.dumps({"id": "s1", "answer": "Man"}) + "\n" + json.dumps({"id": "m1", "answer": "Guitar"}))
    [system] = _eval("--split", "mmau-music", "--data", data, "--predictions", whole)
    assert (system["n"], system["correct"]) == (4, 1)


def _mucho_records():
    def row(track, options, orders, output, genre, reasoning, knowledge):
        shown = [options[i] for i in orders]
        prompt = "Question: q?\n Options: " + "".join(f"({'ABCD'[j]}) {o} " for j, o in enumerate(shown))
        return {
            "id": track,
            "prompt": prompt + "\n The correct answer is: ",
            "answers": shown,
            "answer_orders": orders,
            "dataset": "sdd",
            "genre": genre,
            "reasoning": reasoning,
            "knowledge": knowledge,
            "audio_path": f"data/sdd/audio/00/{track}.2min.mp3",
            "model_output": output,
        }

    return [
        row("1001", ["sad", "happy", "angry", "calm"], [1, 0, 2, 3], "B", "Rock", ["emotion"], []),
        row(
            "1001",
            ["slow", "fast", "medium", "none"],
            [0, 1, 2, 3],
            "The correct answer is: slow",
            "Rock",
            [],
            ["tempo"],
        ),
        row("yt_abc", ["piano", "drums", "flute", "organ"], [3, 2, 1, 0], "Organ", "Jazz", ["timbre"], ["instrument"]),
    ]


def test_muchomusic_file_with_outputs(tmp_path):
    path = tmp_path / "muchomusic_with_outputs.json"
    path.write_text(json.dumps(_mucho_records()))
    [system] = _eval("--split", "muchomusic", "--predictions", path, "--prediction-field", "model_output")
    # item 1: B is where option 0 went -> right; item 2: "slow" is option 0 shown as A -> right;
    # item 3: the right option (original 0, "piano") is shown as D; "Organ" holds no letter A-D and
    # matches the text of option A ("organ") -> answered, wrong
    assert (system["n"], system["correct"], system["unanswered"]) == (3, 2, 0)
    assert system["first_choice"] == pytest.approx(1 / 3)  # only item 2 has its answer shown first
    assert system["breakdowns"]["genre"]["Rock"]["n"] == 2
    assert set(system["breakdowns"]["reasoning"]) == {"emotion", "timbre"}
    assert "The correct answer is:" in system["rule"]


def test_choice_split_errors_are_one_line(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"id": "m1", "answer": "x"}) + "\n")
    result = runner.invoke(app, ["eval", "--split", "mmau", "--predictions", str(path)])
    assert isinstance(result.exception, ConfigError) and "--data" in str(result.exception)
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps(_mmau_records(with_outputs=False)))
    result = runner.invoke(app, ["eval", "--split", "mmau", "--predictions", str(bench)])
    assert isinstance(result.exception, DataError) and "--prediction-field" in str(result.exception)


def test_default_prediction_field_never_reads_the_benchmarks_own_answer(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(json.dumps(_mmau_records()))
    [system] = _eval("--split", "mmau-music", "--predictions", path)  # "answer" is MMAU's key: model_output is read
    assert system["correct"] == 2


def test_muchomusic_manifest_asks_the_prepared_prompt_and_finds_audio(tmp_path):
    from musilingo_cli.pipelines.evaluate.choice_data import items_of, prompt_for, write_choice_manifest

    records = _mucho_records()
    (tmp_path / "audio" / "00").mkdir(parents=True)
    (tmp_path / "audio" / "00" / "1001.2min.mp3").write_bytes(b"")
    items = [item for item, _ in items_of(records, "muchomusic", tmp_path / "x.json")]
    rows = [
        json.loads(x) for x in write_choice_manifest(items, tmp_path, tmp_path / "m.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in rows] == ["1001:0", "1001:1", "yt_abc:2"]  # the track id is shared: position added
    assert rows[0]["question"] == records[0]["prompt"] and rows[0]["question"].endswith("The correct answer is: ")
    assert rows[0]["path"] == str((tmp_path / "audio" / "00" / "1001.2min.mp3").resolve())
    mmau = items_of(_mmau_records(False), "mmau", tmp_path / "y.json")[1][0]
    assert prompt_for(mmau) == (
        "Question m1?\nOptions:\n(A) Piano\n(B) Guitar\n(C) Violin\n(D) Drums\n"
        "Answer with the text of the correct option."
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from model_helpers import build_model

    from musilingo_cli.model.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("evalchoice")
    model = build_model(tmp)
    return save_checkpoint(tmp / "ckpt", model.config, model.trainable_state())


def test_model_answers_the_split_through_ask(tmp_path, checkpoint):
    from audio_helpers import write_music

    data = tmp_path / "mmau-test-mini.json"
    data.write_text(json.dumps(_mmau_records(with_outputs=False)))
    audio = tmp_path / "audios" / "test-mini-audios"
    audio.mkdir(parents=True)
    for seed, row in enumerate(MMAU[:4]):  # m4's audio is missing: an error record, counted as no output
        write_music(audio / f"{row[0]}.wav", 2.0, 24000, seed=seed)
    answers = tmp_path / "answers.jsonl"
    args = [
        "--split",
        "mmau-music",
        "--data",
        data,
        "--model",
        checkpoint,
        "--audio-dir",
        tmp_path / "audios",
        "--answers",
        answers,
        "--preset",
        "greedy",
        "--max-new-tokens",
        "4",
    ]
    [system] = _eval(*args)
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["m1", "m2", "m3", "m4"]
    assert [r["id"] for r in records if r["error"]] == ["m4"]
    assert "(A) Piano" in next(r["question"] for r in records if r["id"] == "m1")
    assert system["n"] == 4 and system["no_output"] == 1 and system["unanswered"] >= 1
    assert "Options:" in system["prompt"]
    assert system["correct"] + system["unanswered"] <= 4


def test_plot_of_a_choice_report_is_written(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(json.dumps(_mmau_records()))
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{**r, "model_output": r["answer"]} for r in _mmau_records()]))
    png = tmp_path / "acc.png"
    report = _eval(
        "--split", "mmau-music", "--predictions", path, other, "--prediction-field", "model_output", "--plot", png
    )
    assert [s["accuracy"] for s in report] == [0.5, 1.0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
