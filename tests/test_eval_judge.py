"""The multiple-choice LLM judge over real HTTP against the local chat server (tests/chat_server.py)."""

import json

from chat_server import ChatServer
from test_eval_choice import _mmau_records

from musilingo_cli.pipelines.evaluate.config import EvalConfig
from musilingo_cli.pipelines.evaluate.judge import JUDGE_SYSTEM, judge_messages
from musilingo_cli.pipelines.evaluate.pipeline import run


def test_judge_is_reported_beside_the_official_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    records = _mmau_records()
    records[3]["model_output"] = "(A)"  # m3: MMAU's text match names no option; the judge reads the letter
    path = tmp_path / "out.json"
    path.write_text(json.dumps(records))
    with ChatServer() as server:
        report = run(
            EvalConfig(
                predictions=[path],
                split="mmau-music",
                prediction_field="model_output",
                judge_model="judge-test",
                judge_base_url=server.base_url,
                write_per_item=False,
            )
        )
        judged = [e for e in server.log if e["kind"] == "judge"]
    [system] = report.systems
    # official: m1 right, m2 wrong, m3 unanswered, m4 right; judge: m1 B right, m2 "fast" -> A wrong,
    # m3 (A) right, m4 "minor" -> B right
    assert system.totals["accuracy"] == 0.5
    assert system.judge["accuracy"] == 0.75 and system.judge["unanswered"] == 0
    assert system.judge["model"] == "judge-test" and system.judge["prompt"] == JUDGE_SYSTEM
    assert len(judged) == 4


def test_judge_prompt_letters_the_options():
    from musilingo_cli.pipelines.evaluate.choice_rules import ChoiceItem

    item = ChoiceItem("x", "mmau", "Which?", ["Jazz", "Rock"], 0, "Jazz", None, None, {})
    user = judge_messages(item, "rock")[1]["content"]
    assert "(A) Jazz\n(B) Rock" in user and "<answer>\nrock\n</answer>" in user
