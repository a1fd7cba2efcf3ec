"""`--split sdd` (Song Describer): multi-reference scoring on a small hand-made song_describer.csv."""

import csv
import json

import pytest
from eval_helpers import wordnet, write_jsonl  # noqa: F401
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.pipelines.evaluate.config import EvalConfig
from musilingo_cli.pipelines.evaluate.pipeline import run
from musilingo_cli.pipelines.evaluate.sdd import read_sdd, score_multi

ROWS = [  # caption_id, track_id, caption, is_valid_subset, path
    (1, 1005, "a calm piano piece with soft strings", "True", "05/1005.mp3"),
    (2, 1005, "loud drums and a heavy bass line", "True", "05/1005.mp3"),
    (3, 2210, "an acoustic guitar plays a folk melody", "True", "10/2210.mp3"),
    (4, 3307, "fast electronic dance music with synths", "False", "07/3307.mp3"),
]


def write_sdd(path):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "path"])
        for caption_id, track, caption, valid, audio in ROWS:
            writer.writerow([caption_id, track, caption, valid, 1, audio])
    return path


def test_reader_groups_captions_by_track_and_keeps_the_valid_subset(tmp_path):
    tracks = read_sdd(write_sdd(tmp_path / "song_describer.csv"))
    assert [(t.id, len(t.captions), t.audio) for t in tracks] == [
        ("1005", 2, "05/1005.2min.mp3"),
        ("2210", 1, "10/2210.2min.mp3"),
    ]
    assert [t.id for t in read_sdd(tmp_path / "song_describer.csv", all_tracks=True)] == ["1005", "2210", "3307"]


def test_prediction_identical_to_one_of_the_references_scores_one(wordnet):
    answers = ["loud drums and a heavy bass line", "an acoustic guitar plays a folk melody"]
    captions = [[ROWS[0][2], ROWS[1][2]], [ROWS[2][2]]]
    scores, per_item = score_multi(answers, captions)
    # every n-gram is found in one reference and each hypothesis has a reference of its length: BLEU = 1
    assert [scores[f"bleu{n}"] for n in (1, 2, 3, 4)] == pytest.approx([1.0] * 4, abs=1e-12)
    assert [item["rouge_l"] for item in per_item] == [1.0, 1.0]  # score_multi takes the best caption
    # METEOR of an exact match: one chunk of m words, penalty 0.5 * (1/m)^3 (m = 7)
    assert per_item[0]["meteor"] == pytest.approx(1 - 0.5 / 7**3)
    # scored against the first caption only, track 1005 would be far from 1
    single, single_items = score_multi(answers, [[ROWS[0][2]], [ROWS[2][2]]])
    assert single_items[0]["rouge_l"] < 0.2 and single["bleu4"] < 1.0
    assert scores["cider_d"] > single["cider_d"]


def test_cli_scores_ask_style_answers_by_track_id(tmp_path, wordnet):
    data = write_sdd(tmp_path / "song_describer.csv")
    answers = write_jsonl(
        tmp_path / "answers.jsonl",
        [
            {"id": "1005", "answer": "a calm piano piece with soft strings", "error": None},
            {"id": "2210", "answer": "rock", "error": None},
            {"id": "3307", "answer": "outside the valid subset", "error": None},
        ],
    )
    result = CliRunner().invoke(
        app, ["eval", "--split", "sdd", "--data", str(data), "--predictions", str(answers), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    (out,) = json.loads(result.stdout)
    assert out["n"] == 2 and out["floor"] is not None and out["bertscore_f1"] is None
    assert any("outside the scored subset" in note for note in out["notes"])
    rows = [json.loads(line) for line in (tmp_path / "answers.scores.jsonl").read_text().splitlines()]
    assert rows[0]["rouge_l"] == 1.0 and len(rows[0]["references"]) == 2
    assert out["rouge_l"] == pytest.approx((1.0 + rows[1]["rouge_l"]) / 2)


def test_sdd_needs_its_csv_and_the_standard_profile(tmp_path):
    answers = write_jsonl(tmp_path / "a.jsonl", [{"id": "1005", "answer": "x"}])
    with pytest.raises(ConfigError, match="song_describer.csv"):
        run(EvalConfig(predictions=[answers], split="sdd"))
    csv_file = tmp_path / "x.csv"
    csv_file.write_text("caption_id,track_id,caption\n1,1005,a calm piece\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="standard profile"):
        run(EvalConfig(predictions=[answers], split="sdd", data=csv_file, profile="musilingo-paper"))
    bad = tmp_path / "bad.csv"
    bad.write_text("track_id,text\n1,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="caption"):
        run(EvalConfig(predictions=[answers], split="sdd", data=bad))
