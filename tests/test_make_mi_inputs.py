"""make-mi inputs and pure parts: caption readers, bad files, reply parsing, outlier rules, prompts."""

import json

import pytest
from make_mi_helpers import MUSICCAPS_EXCERPT, run_cli, write_excerpt

from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.data.captions import read_captions
from musilingo_cli.pipelines.chat_api import UnparseableReply, parse_json_reply, retry_after
from musilingo_cli.pipelines.make_mi import MakeMIConfig, load_prompt, parse_pairs, parse_verdicts, rule_rejects


def test_musiccaps_excerpt_reads_with_split(tmp_path):
    path = write_excerpt(tmp_path)
    got = read_captions(path)
    lines = MUSICCAPS_EXCERPT.splitlines()[1:]
    assert len(got.captions) == len(lines) == 30
    assert sum(c.is_eval for c in got.captions) == sum(line.endswith(",True") for line in lines)
    assert got.captions[0].id == "-0Gj8-vB1q4" and got.captions[0].text.startswith("The low quality recording")
    assert got.captions[0].extra["aspect_list"].startswith("['low quality'")


def test_missing_column_names_it_and_the_columns_found(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text("clip,text\na,hello\n")
    with pytest.raises(DataError, match=r"no column 'ytid'; columns found: clip, text; pass --id-column"):
        read_captions(path)
    got = read_captions(path, id_column="clip", caption_column="text", split_column=None)
    assert [(c.id, c.text, c.is_eval) for c in got.captions] == [("a", "hello", False)]


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_captions(empty)
    header = tmp_path / "header.csv"
    header.write_text("ytid,caption,is_audioset_eval\n")
    with pytest.raises(DataError, match="no rows"):
        read_captions(header)


def test_unreadable_rows_name_their_line(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text("ytid,caption,is_audioset_eval\na,fine,True\nb,an, unquoted comma,False\n")
    with pytest.raises(DataError, match=r"caps.csv:3: row has 4 fields but the header has 3"):
        read_captions(path)
    path.write_text("ytid,caption,is_audioset_eval\na,fine,maybe\n")
    with pytest.raises(DataError, match=r"caps.csv:2: 'is_audioset_eval' is 'maybe'"):
        read_captions(path)
    path.write_text("ytid,caption,is_audioset_eval\na,one,True\na,two,False\n")
    with pytest.raises(DataError, match="id 'a' already used on line 2"):
        read_captions(path)


def test_empty_captions_skipped_and_counted(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text(
        'ytid,caption,is_audioset_eval\na,"A slow piano ballad.",False\nb,"  ",True\nc,,False\nd,Loud drums.,True\n'
    )
    got = read_captions(path)
    assert [c.id for c in got.captions] == ["a", "d"] and got.skipped_empty == 2


def test_jsonl_with_custom_columns(tmp_path):
    path = tmp_path / "caps.jsonl"
    rows = [
        {"track": "t1", "desc": "Calm ambient pads.", "split": "test"},
        {"track": "t2", "desc": "Fast punk.", "split": "train"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = read_captions(path, id_column="track", caption_column="desc", split_column="split")
    assert [(c.id, c.is_eval) for c in got.captions] == [("t1", True), ("t2", False)]
    path.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"caps.jsonl:2: not valid JSON"):
        read_captions(path, id_column="track", caption_column="desc", split_column="split")


def test_bad_csv_is_one_red_line_from_the_cli(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text("clip,text\na,hello\n")
    result = run_cli(["make-mi", "--captions", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    assert result.returncode == 1
    assert (
        result.stderr.strip().count("\n") == 0
        and "no column 'ytid'" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_tolerant_json_parsing():
    assert parse_json_reply('{"pairs": []}') == {"pairs": []}
    assert parse_json_reply('Sure!\n```json\n{"pairs": [1]}\n```\nEnjoy.') == {"pairs": [1]}
    assert parse_json_reply('Here you go: {"verdicts": [{"index": 1}]} -- done') == {"verdicts": [{"index": 1}]}
    with pytest.raises(UnparseableReply):
        parse_json_reply("I am sorry, I cannot help with that.")
    with pytest.raises(UnparseableReply):
        parse_json_reply("")


def test_pairs_and_verdicts_parsing():
    pairs, bad = parse_pairs({"pairs": [{"question": " Q? ", "answer": "A."}, {"question": 3}, "junk"]})
    assert pairs == [{"question": "Q?", "answer": "A."}] and [b["reason"] for b in bad] == [
        "unparseable",
        "unparseable",
    ]
    assert parse_pairs([{"q": "Q", "a": "A"}])[0] == [{"question": "Q", "answer": "A"}]
    with pytest.raises(UnparseableReply):
        parse_pairs({"answer": "no list"})
    verdicts = parse_verdicts(
        {"verdicts": [{"index": 2, "faithful": "no"}, {"index": 1, "faithful": True, "reason": "ok"}]}, 2
    )
    assert [v["faithful"] for v in verdicts] == [True, False]
    with pytest.raises(UnparseableReply, match=r"no verdict for pairs \[2\]"):
        parse_verdicts({"verdicts": [{"index": 1, "faithful": True}]}, 2)


def test_outlier_rules_each_reason():
    caption = "A slow jazz ballad with a soft female voice, brushed drums and an upright bass."
    pairs = [
        {"question": "What genre is this?", "answer": "It is a slow jazz ballad."},
        {"question": "What genre is this ?", "answer": "Jazz."},
        {"question": "What does the caption say?", "answer": "A jazz ballad."},
        {"question": "Who sings?", "answer": ""},
        {
            "question": "Which instruments play?",
            "answer": "Distorted electric guitars, synthesizer arpeggios, trap hi-hats and autotuned rap.",
        },
        {"question": "Describe the drums.", "answer": " ".join(["brushed drums"] * 40)},
        {"question": "Is there a singer?", "answer": "Yes, a soft female voice."},
    ]
    got = rule_rejects(pairs, caption, "short", MakeMIConfig(captions="x"))
    assert got == {1: "duplicate_question", 2: "mentions_caption", 3: "empty", 4: "off_caption", 5: "answer_length"}
    assert rule_rejects(pairs[:1], caption, "long", MakeMIConfig(captions="x")) == {0: "answer_length"}


def test_prompts_by_name_and_path(tmp_path):
    short = load_prompt("short")
    messages = short.messages(caption="Soft piano.", n=5)
    assert "Example questions" in messages[0]["content"] and "Soft piano." in messages[1]["content"]
    assert '{"pairs"' in messages[1]["content"] and "Write 5 question-answer pairs" in messages[1]["content"]
    custom = tmp_path / "mine.txt"
    custom.write_text("# my prompt\n[system]\nBe brief.\n[user]\n{caption}\n")
    assert load_prompt(str(custom)).messages(caption="X")[1]["content"] == "X"
    with pytest.raises(ConfigError, match="no prompt named 'nope'"):
        load_prompt("nope")
    custom.write_text("[system]\nonly a system part\n")
    with pytest.raises(ConfigError, match=r"needs a \[system\] and a \[user\]"):
        load_prompt(str(custom))


def test_retry_after_header_forms():
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert 0 <= retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) < 1e-9
    assert retry_after({}) is None
