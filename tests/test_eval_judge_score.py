"""The 0-5 LLM judge score for captions and open answers: the real openai client over real HTTP against
the local chat server (tests/chat_server.py, whose `score_reply` scores 0-5 by the words a candidate
shares with the first reference), reported beside the official metrics with its pinned prompt."""

import hashlib
import json
from importlib import resources

import pytest
from chat_server import ChatServer
from eval_helpers import wordnet  # noqa: F401
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.pipelines.chat_parsing import UnparseableReply
from musilingo_cli.pipelines.evaluate import judge_score
from musilingo_cli.pipelines.evaluate.config import EvalConfig
from musilingo_cli.pipelines.evaluate.pipeline import run
from musilingo_cli.pipelines.evaluate.report import render_text

REFS = ["a calm piano piece", "loud rock with drums", "an ambient synth pad", "a jazz trio with brushes"]
# shared distinct words with the reference: 4 -> 4, 2 -> 2; "(garbled)" unparseable; "" empty -> 0
ANSWERS = ["a calm piano piece", "rock drums", "synth (garbled)", ""]


def _files(tmp_path):
    pairs = [{"id": str(i), "prediction": a, "ground_truth": r} for i, (a, r) in enumerate(zip(ANSWERS, REFS))]
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(pairs))
    return path


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(judge_score, "RETRY_BASE", 0.01)  # content retries back off 0-10 ms, not 0-1 s
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_judge_score_beside_the_metrics_with_its_pinned_prompt(tmp_path, wordnet):
    path = _files(tmp_path)
    with ChatServer() as server:
        report = run(
            EvalConfig(
                predictions=[path],
                prediction_field="prediction",
                reference_field="ground_truth",
                bertscore=False,
                judge_model="judge-test",
                judge_base_url=server.base_url,
                per_item=tmp_path / "items.jsonl",
            )
        )
        scored = [e for e in server.log if e["kind"] == "score"]
    [system] = report.systems
    judge = system.judge
    assert judge["scored"] == 3 and judge["unparseable"] == 1 and judge["failed"] == 0 and judge["empty"] == 1
    assert judge["mean"] == (4 + 2 + 0) / 3  # the unparseable item is not in the mean, never guessed
    assert judge["distribution"] == {"0": 1, "1": 0, "2": 1, "3": 0, "4": 1, "5": 0}
    text = (resources.files("musilingo_cli.prompts") / "eval_judge_score_v1.txt").read_text(encoding="utf-8")
    assert judge["prompt"] == "eval_judge_score_v1"
    assert judge["prompt_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert judge["model"] == "judge-test" and "not an official metric" in judge["label"]
    # the official metrics are all still there, unchanged in meaning
    assert system.scores["meteor"] is not None and system.scores["cider_d"] is not None
    # the empty answer is not sent; the garbled one is sent 1 + RETRIES times, each with the pinned rubric
    assert len(scored) == 2 + 1 + judge_score.RETRIES
    system_prompt = scored[0]["body"]["messages"][0]["content"]
    assert system_prompt.startswith("You grade an answer about a piece of music") and '{"score"' in system_prompt
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [i["judge_score"] for i in items] == [4, 2, None, 0]
    markdown = render_text(report, "markdown")
    assert "LLM judge score (0-5, mean)" in markdown and "eval_judge_score_v1" in markdown
    assert "1 unparseable replies" in markdown
    [obj] = json.loads(render_text(report, "json"))
    assert obj["judge_score"]["mean"] == judge["mean"] and obj["meteor"] == system.scores["meteor"]


def test_no_judge_score_without_judge_model(tmp_path, wordnet):
    report = run(
        EvalConfig(
            predictions=[_files(tmp_path)],
            prediction_field="prediction",
            reference_field="ground_truth",
            bertscore=False,
            write_per_item=False,
        )
    )
    assert report.systems[0].judge is None
    assert "judge" not in render_text(report, "markdown")


def test_cli_judge_score_out_of_range_reply_is_counted_not_clipped(tmp_path, wordnet):
    pairs = [{"prediction": "calm piano (out of range)", "ground_truth": "a calm piano piece"}] * 2
    path = tmp_path / "p.json"
    path.write_text(json.dumps(pairs))
    with ChatServer() as server:
        result = CliRunner().invoke(
            app,
            [
                "eval",
                "--predictions",
                str(path),
                "--prediction-field",
                "prediction",
                "--reference-field",
                "ground_truth",
                "--no-bertscore",
                "--no-per-item",
                "--format",
                "json",
                "--judge-model",
                "judge-test",
                "--judge-base-url",
                server.base_url,
            ],
        )
    assert result.exit_code == 0, result.output
    judge = json.loads(result.stdout)[0]["judge_score"]
    assert judge["unparseable"] == 2 and judge["scored"] == 0 and judge["mean"] is None


@pytest.mark.parametrize(
    "data",
    [
        {"score": 6},
        {"score": -1},
        {"score": 2.5},
        {"score": True},
        {"score": "3"},
        [3],
        {"score": float("nan")},
        {"score": float("inf")},
        {},
    ],
)
def test_validate_score_refuses_what_is_not_an_integer_0_to_5(data):
    with pytest.raises(UnparseableReply):
        judge_score.validate_score(data)


def test_validate_score_accepts_integers_0_to_5():
    for value in (0, 5, 3.0):
        judge_score.validate_score({"score": value})


def test_score_messages_number_every_reference():
    prompt = judge_score.score_prompt()
    user = judge_score.score_messages(prompt, "What genre?", ["jazz", "swing"], "bebop {n}")[1]["content"]
    assert "<question>\nWhat genre?\n</question>" in user
    assert "<references>\n1. jazz\n2. swing\n</references>" in user
    assert "<candidate>\nbebop {n}\n</candidate>" in user  # braces in an answer reach the judge unchanged


def test_sdd_judge_sees_every_caption_of_the_track(tmp_path, wordnet):
    from test_eval_sdd import ROWS, write_sdd

    data = write_sdd(tmp_path / "song_describer.csv")
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        json.dumps({"id": "1005", "answer": "a calm piano piece"}) + "\n" + json.dumps({"id": "2210", "answer": "folk"})
    )
    with ChatServer() as server:
        report = run(
            EvalConfig(
                predictions=[answers],
                split="sdd",
                data=data,
                judge_model="judge-test",
                judge_base_url=server.base_url,
                write_per_item=False,
            )
        )
        sent = {e["body"]["messages"][1]["content"] for e in server.log if e["kind"] == "score"}
    judge = report.systems[0].judge
    assert judge["scored"] == 2 and judge["mean"] == (4 + 1) / 2  # shared words with the first caption
    [track_1005] = [text for text in sent if "a calm piano piece\n</candidate>" in text]
    assert f"1. {ROWS[0][2]}\n2. {ROWS[1][2]}\n</references>" in track_1005
    assert report.systems[0].scores["cider_d"] is not None


def test_an_unreachable_judge_is_one_line_before_any_scoring(tmp_path, wordnet):
    from train_helpers import free_port

    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--predictions",
            str(_files(tmp_path)),
            "--no-bertscore",
            "--judge-model",
            "judge-test",
            "--judge-base-url",
            f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        ],
    )
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:" in str(result.exception), result.output
