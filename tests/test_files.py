"""One reader for users' JSON, JSON-lines and CSV files (issue 12, item 12): a UTF-8 BOM and CRLF
are read, JSON versus JSON lines is told by content whatever the extension, content that is
neither and non-UTF-8 bytes give one line naming file, line and encoding; every command's reader
(make-mi captions, ask manifests, training data, eval predictions) goes through it. Also: eval
that cannot write its --output report still prints it and names the file."""

import json
from pathlib import Path

import pytest
from eval_helpers import wordnet  # noqa: F401
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.core.errors import DataError
from musilingo_cli.core.files import iter_jsonl_objects, read_csv_rows, read_json, sniff_json
from musilingo_cli.data.captions import read_captions
from musilingo_cli.data.datasets import detect_format, read_dataset
from musilingo_cli.data.inputs import read_manifest
from musilingo_cli.pipelines.evaluate.readers import read_predictions, read_train_captions

BOM = b"\xef\xbb\xbf"
RECORDS = [{"id": "a", "answer": "Slow piano.", "reference": "A slow piano piece."}, {"id": "b", "answer": "Rock."}]


def _windows(path, text: str):
    """The file as Notepad / PowerShell save it: a UTF-8 BOM and CRLF line ends."""
    path.write_bytes(BOM + text.replace("\n", "\r\n").encode("utf-8"))
    return path


def test_bom_and_crlf_json_document_and_json_lines(tmp_path):
    doc = _windows(tmp_path / "p.json", json.dumps(RECORDS, indent=1))
    assert read_json(doc) == RECORDS
    lines = _windows(tmp_path / "p.jsonl", "".join(json.dumps(r) + "\n" for r in RECORDS))
    assert [row for _, row in iter_jsonl_objects(lines)] == RECORDS
    table = _windows(tmp_path / "t.csv", 'ytid,caption\nx1,"two\nlines"\nx2,plain\n')
    columns, rows = read_csv_rows(table)
    assert columns == ["ytid", "caption"] and [r["caption"] for _, r in rows] == ["two\nlines", "plain"]


def test_content_decides_not_the_extension(tmp_path):
    lines_named_json = tmp_path / "p.json"
    lines_named_json.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert sniff_json(lines_named_json) == ("jsonl", [(1, RECORDS[0]), (2, RECORDS[1])])
    assert read_json(lines_named_json) == RECORDS
    list_named_jsonl = tmp_path / "p.jsonl"
    list_named_jsonl.write_text(json.dumps(RECORDS, indent=2))
    assert sniff_json(list_named_jsonl)[0] == "json"
    assert [row for _, row in iter_jsonl_objects(list_named_jsonl)] == RECORDS


def test_neither_says_what_it_found(tmp_path):
    csv_named_json = tmp_path / "p.json"
    csv_named_json.write_text("ytid,caption\nx,y\n")
    with pytest.raises(DataError) as err:
        read_json(csv_named_json)
    assert str(err.value) == (
        f"{csv_named_json}: neither a JSON document nor JSON lines: it starts with 'ytid,caption' (it looks like CSV)"
    )
    bad_line = tmp_path / "p.jsonl"
    bad_line.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[1]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"p.jsonl:3: not valid JSON \(.*\); the file is JSON lines"):
        read_json(bad_line)
    broken_doc = tmp_path / "d.json"
    broken_doc.write_text('[\n {"id": "a",\n  "answer": }\n]\n')
    with pytest.raises(DataError, match=r"d.json: not valid JSON \(line 3: .*\); it is neither one JSON document nor"):
        read_json(broken_doc)
    empty = tmp_path / "e.json"
    empty.write_bytes(BOM + b"\r\n")
    with pytest.raises(DataError, match="e.json: the file is empty"):
        read_json(empty)


def test_non_utf8_names_file_line_and_encoding(tmp_path):
    latin = tmp_path / "m.csv"
    latin.write_bytes("path,question\r\nok.wav,Genre?\r\ncaf\u00e9 au lait.wav,Tempo?\r\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_manifest(latin, [])
    message = str(err.value)
    assert message.startswith(f"{latin}:3: not UTF-8 text (byte 0xe9); it may be ") and "\n" not in message
    assert "-t UTF-8" in message
    training = tmp_path / "mine.jsonl"
    training.write_bytes(b'{"audio": "a.wav", "answer": "ok"}\n{"audio": "b.wav", "answer": "d\xe9j\xe0 vu"}\n')
    with pytest.raises(DataError, match=r"mine.jsonl:2: not UTF-8 text \(byte 0xe9\); it may be "):
        detect_format(training)
    utf16 = tmp_path / "p.json"
    utf16.write_bytes(json.dumps(RECORDS).encode("utf-16"))
    with pytest.raises(DataError, match=r"p.json:1: not UTF-8 text \(byte 0xff\); it may be UTF-16"):
        read_predictions(utf16, "answer", "reference")


def test_every_command_reader_uses_it(tmp_path):
    # eval predictions saved by Notepad (BOM, CRLF), and JSON lines named .json
    bom = _windows(tmp_path / "pred.json", json.dumps(RECORDS))
    got = read_predictions(bom, "answer", "reference")
    assert [(p.id, p.answer, p.reference) for p in got] == [
        ("a", "Slow piano.", "A slow piano piece."),
        ("b", "Rock.", None),
    ]
    train = _windows(tmp_path / "train.csv", "ytid,caption,is_audioset_eval\nx,Soft piano.,False\ny,Drums.,True\n")
    assert read_train_captions(train) == ["Soft piano."]
    # make-mi captions: a BOM/CRLF CSV, and JSON lines in a file named .csv
    caps = _windows(tmp_path / "caps.csv", "ytid,caption,is_audioset_eval\nx,Soft piano.,True\n")
    assert [(c.id, c.text, c.is_eval) for c in read_captions(caps).captions] == [("x", "Soft piano.", True)]
    caps_lines = tmp_path / "caps2.csv"
    caps_lines.write_text(json.dumps({"ytid": "y", "caption": "Loud drums.", "is_audioset_eval": False}) + "\n")
    assert [c.text for c in read_captions(caps_lines).captions] == ["Loud drums."]
    # ask manifests: BOM/CRLF CSV, and JSON lines named .json
    (tmp_path / "a.wav").write_bytes(b"")
    manifest = _windows(tmp_path / "m.csv", "path,question\na.wav,Genre?\n")
    assert [(i.audio, i.question) for i in read_manifest(manifest, [])] == [("a.wav", "Genre?")]
    manifest_json = tmp_path / "m.json"
    manifest_json.write_text(json.dumps({"path": "a.wav", "question": "Tempo?"}) + "\n")
    assert [i.question for i in read_manifest(manifest_json, [])] == ["Tempo?"]
    # training data: users' JSON lines with a BOM and named .json
    data = _windows(tmp_path / "mine.json", json.dumps({"audio": "a.wav", "question": "Q?", "answer": "A."}) + "\n")
    assert detect_format(data) == "jsonl"
    assert [(e.question, e.answer) for e in read_dataset(data, "jsonl")] == [("Q?", "A.")]
    mi = _windows(tmp_path / "mi.jsonl", json.dumps({"QA": [{"question": "q", "answer": "a", "ytid": "y"}]}))
    assert detect_format(mi) == "mi"


def test_eval_that_cannot_write_its_report_prints_it_and_names_the_file(tmp_path, wordnet):  # noqa: F811
    predictions = _windows(tmp_path / "pred.json", json.dumps(RECORDS[:1] + [{**RECORDS[1], "reference": "Rock."}]))
    target = Path("/dev/full")  # a file that refuses every write (ENOSPC): a disk that fills up while scoring
    result = CliRunner().invoke(
        app,
        ["eval", "-p", str(predictions), "--no-bertscore", "--no-per-item", "--format", "markdown", "-o", str(target)],
    )
    assert result.exit_code == 1
    assert "| ROUGE-L F1 (no stem) |" in result.stdout  # the scores are shown
    # the CLI's main() prints this DataError as one red line; CliRunner hands it over as the exception
    assert isinstance(result.exception, DataError)
    assert f"could not be written to --output {target} (No space left on device)" in str(result.exception)
