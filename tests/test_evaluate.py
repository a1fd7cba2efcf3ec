"""`musilingo eval`: split loaders, pairing, floor, counts and output formats, through the CLI."""

import csv
import io
import json
from pathlib import Path

import pytest
from eval_helpers import MUSICQA_EXCERPT, musicqa_json, tiny_bert, wordnet, write_jsonl  # noqa: F401
from typer.testing import CliRunner

from musilingo_cli.cli import app
from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.model.config import CAPTION_INSTRUCTION
from musilingo_cli.pipelines.evaluate import metrics
from musilingo_cli.pipelines.evaluate.answering import write_manifest
from musilingo_cli.pipelines.evaluate.config import EvalConfig, EvalItem
from musilingo_cli.pipelines.evaluate.pairing import floor_references, pair
from musilingo_cli.pipelines.evaluate.pipeline import run
from musilingo_cli.pipelines.evaluate.readers import Prediction, load_split_items

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the checkout


def _answers(path: Path, texts: list[str], **extra) -> Path:
    """ask-style answers for the MusicQA excerpt, with the ids load_split_items gives."""
    records = [
        {"id": f"{a}:{i}", "audio": f"/audio/{a}", "question": q, "answer": t, "error": None, **extra}
        for i, ((a, q, _), t) in enumerate(zip(MUSICQA_EXCERPT, texts))
    ]
    return write_jsonl(path, records)


def _mi_file(path: Path, with_kind: bool = True) -> Path:
    qa = []
    for i in range(6):
        row = {
            "question": f"q{i}",
            "answer": f"a{i}",
            "ytid": f"yt{i}",
            "is_audioset_eval": i != 0,
            "sampling_rate": 48000,
        }
        if with_kind:
            row["kind"] = "short" if i % 2 else "long"
        qa.append(row)
    path.write_text(json.dumps({"QA": qa}))
    return path


# ---------------------------------------------------------------- loaders


def test_musicqa_loader_reads_questions_answers_and_ids(tmp_path):
    items = load_split_items("musicqa", musicqa_json(tmp_path / "EvalMusicQA.json"))
    assert len(items) == len(MUSICQA_EXCERPT)
    assert (items[0].id, items[0].audio, items[0].question) == ("012542.wav:0", "012542.wav", "Describe the audio")
    assert items[0].reference.startswith("The audio is an alternative rock")


@pytest.mark.skipif(not SHARED.is_dir(), reason="real benchmark texts not on this machine")
def test_real_files_give_the_published_test_sizes():
    musicqa = load_split_items("musicqa", SHARED / "EvalMusicQA.json")
    caps = load_split_items("musiccaps", SHARED / "musiccaps-public.csv")
    assert len(musicqa) == 5040 and len({i.id for i in musicqa}) == 5040
    assert len(caps) == 2858 and {i.question for i in caps} == {CAPTION_INSTRUCTION}


def test_musiccaps_csv_keeps_audioset_eval_rows(tmp_path):
    path = tmp_path / "mc.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ytid", "start_s", "end_s", "caption", "is_audioset_eval"])
        writer.writerows([["a", 0, 10, "A slow song.", "True"], ["b", 0, 10, "Rock.", "False"]])
    items = load_split_items("musiccaps", path)
    assert [(i.id, i.question, i.reference) for i in items] == [
        ("a", "Please give a caption to the music.", "A slow song.")
    ]


def test_music_instruct_filters_eval_split_and_kind(tmp_path):
    mixed = _mi_file(tmp_path / "mi.json")
    assert [i.id for i in load_split_items("mi-short", mixed)] == ["yt1:1", "yt3:3", "yt5:5"]
    assert [i.id for i in load_split_items("mi-long", mixed)] == ["yt2:2", "yt4:4"]
    plain = _mi_file(tmp_path / "short.json", with_kind=False)
    assert len(load_split_items("mi-short", plain)) == 5  # no kind info: every eval item


def test_hub_offline_and_not_cached_is_one_line_with_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_split_items("mi-short", None, cache_dir=tmp_path)
    message = str(err.value)
    assert "m-a-p/Music-Instruct" in message and "--data" in message and "\n" not in message
    assert "is not in the Hugging Face cache" in message and "hf download" in message  # not "has none of"


def test_manifest_for_ask_resolves_ytids_and_names(tmp_path):
    (tmp_path / "yt1.flac").write_bytes(b"")
    (tmp_path / "012542.wav").write_bytes(b"")
    items = [
        EvalItem("yt1:0", "yt1", "Q", "r"),
        EvalItem("012542.wav:0", "012542.wav", "Q", "r"),
        EvalItem("gone:1", "gone", "Q", "r"),
    ]
    rows = [json.loads(x) for x in write_manifest(items, tmp_path, tmp_path / "m.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["yt1.flac", "012542.wav", "gone"]
    assert [r["id"] for r in rows] == ["yt1:0", "012542.wav:0", "gone:1"] and rows[0]["question"] == "Q"


# ---------------------------------------------------------------- pairing


def _pred(**kw):
    base = {"id": None, "audio": None, "question": None, "answer": "x", "reference": None, "failed": False}
    return Prediction(**{**base, **kw})


def test_pairs_by_id_then_by_audio_stem_and_question():
    refs = [EvalItem("a:0", "a.wav", "Q1", "r1"), EvalItem("b:1", "b.wav", "Q2", "r2")]
    _, items, unanswered = pair([_pred(id="b:1"), _pred(id="a:0")], refs, "p")
    assert [i.reference for i in items] == ["r2", "r1"] and items[0].question == "Q2" and unanswered == 0
    _, items, unanswered = pair([_pred(audio="/data/b.flac", question="Q2 ")], refs, "p")
    assert [i.reference for i in items] == ["r2"] and unanswered == 1


def test_pairing_errors_are_explicit():
    refs = [EvalItem("a", "a", "Q", "r1"), EvalItem("b", "b", "Q", "r2")]
    with pytest.raises(DataError, match="duplicate ids.*a"):
        pair([_pred(id="a"), _pred(id="a")], refs, "p")
    with pytest.raises(DataError, match="1 answers have no reference, e.g. .*zz"):
        pair([_pred(id="a"), _pred(id="zz")], refs, "p")
    keyless = [EvalItem(None, None, None, "r")]
    with pytest.raises(DataError, match="cannot pair 2 answers with 1 references"):
        pair([_pred(), _pred()], keyless, "p")
    assert pair([_pred()], keyless, "p")[1][0].reference == "r"  # no keys anywhere, same count: by position


# ---------------------------------------------------------------- floor


def test_floor_uses_other_items_of_the_same_question():
    questions = ["Q1", "Q1", "Q1", "Q2", "Q2", "Q3"]
    refs = ["a", "b", "c", "d", "e", "f"]
    floor, fallback = floor_references(questions, refs, seed=3)
    assert fallback == 1
    assert all(floor[i] != refs[i] for i in range(6))
    assert sorted(floor[:3]) == ["a", "b", "c"] and sorted(floor[3:5]) == ["d", "e"]
    assert floor_references(questions, refs, seed=3) == (floor, fallback)


# ---------------------------------------------------------------- the command


def test_cli_json_two_files_side_by_side(tmp_path, wordnet, tiny_bert):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    good = _answers(tmp_path / "good.jsonl", [r for _, _, r in MUSICQA_EXCERPT])
    generic = ["The music is a pop song with a fast tempo."] * len(MUSICQA_EXCERPT)
    generic[1], generic[2] = "", "ignored"
    bad = _answers(tmp_path / "bad.jsonl", generic)
    records = [json.loads(line) for line in bad.read_text().splitlines()]
    records[2]["error"] = "AudioError: cannot decode"
    write_jsonl(bad, records)
    result = runner.invoke(
        app,
        [
            "eval",
            "--predictions",
            str(good),
            str(bad),
            "--split",
            "musicqa",
            "--data",
            str(refs),
            "--bertscore-model",
            str(tiny_bert),
            "--bertscore-layers",
            "2",
            "--format",
            "json",
            "--per-item",
            str(tmp_path / "scores"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [Path(o["predictions"]).name for o in out] == ["good.jsonl", "bad.jsonl"]
    for obj in out:
        assert set(metrics.METRIC_KEYS) <= set(obj) and set(metrics.METRIC_KEYS) <= set(obj["floor"])
        assert obj["profile"] == "standard" and obj["n"] == 12 and "nltk" in obj["versions"]
    good_o, bad_o = out
    assert good_o["bleu4"] == pytest.approx(1.0) and good_o["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)
    assert good_o["bleu4"] > good_o["floor"]["bleu4"]
    assert bad_o["counts"]["empty"] == 1 and bad_o["counts"]["failed"] == 1
    assert good_o["floor"] == bad_o["floor"]  # same items, same seed
    per_item = [json.loads(line) for line in (tmp_path / "scores" / "bad.scores.jsonl").read_text().splitlines()]
    assert [p["status"] for p in per_item[:3]] == ["ok", "empty", "failed"] and per_item[2]["answer"] == ""


def test_floor_groups_by_the_references_questions_when_answers_have_only_ids(tmp_path, wordnet):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    answers = write_jsonl(
        tmp_path / "ids.jsonl", [{"id": f"{a}:{i}", "answer": "Rock."} for i, (a, _, _) in enumerate(MUSICQA_EXCERPT)]
    )
    report = run(EvalConfig(predictions=[answers], references=refs, bertscore=False, write_per_item=False))
    # the excerpt has 3 questions asked twice and 6 asked once
    assert report.systems[0].counts["floor_fallback"] == 6


def test_cli_lp_musiccaps_inference_json_with_own_references(tmp_path, wordnet):
    pairs = [
        {"prediction": "A slow piano ballad.", "ground_truth": "A slow, sad piano ballad."},
        {"prediction": "Loud rock with drums.", "ground_truth": "Rock music with loud drums and guitar."},
    ]
    path = tmp_path / "inference.json"
    path.write_text(json.dumps(pairs))
    result = runner.invoke(
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
            "--format",
            "json",
            "--profile",
            "musilingo-paper",
        ],
    )
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)[0]
    direct = metrics.score(
        [p["prediction"] for p in pairs], [p["ground_truth"] for p in pairs], "musilingo-paper", None
    )
    assert obj["bleu_mean"] == direct.scores["bleu_mean"] and obj["rouge_l"] == direct.scores["rouge_l"]
    assert obj["bertscore_f1"] is None and any("--no-bertscore" in n for n in obj["notes"])
    # no questions (a captioning file): all items share one implicit instruction, so no fallback
    assert obj["counts"]["floor_fallback"] == 0 and obj["floor"]["rouge_l"] < obj["rouge_l"]


def test_cli_markdown_and_csv_name_profile_and_versions(tmp_path, wordnet):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    answers = _answers(tmp_path / "a.jsonl", ["The audio is rock."] * len(MUSICQA_EXCERPT))
    common = ["eval", "-p", str(answers), "--references", str(refs), "--no-bertscore", "--no-per-item"]
    md = runner.invoke(
        app, common + ["--format", "markdown", "--profile", "musilingo-paper", "-o", str(tmp_path / "r.md")]
    )
    assert md.exit_code == 0, md.output
    assert (
        "replicates MusiLingo's qa.py" in md.stdout
        and "nltk 3." in md.stdout
        and "| B-U (qa.py: char sentence BLEU) |" in md.stdout
    )
    assert (tmp_path / "r.md").read_text() == md.stdout
    table = runner.invoke(app, common + ["--format", "csv"])
    rows = list(csv.reader(io.StringIO(table.stdout)))
    assert rows[0] == ["metric", "a", "floor"] and rows[-2][0] == "profile" and rows[-2][1].startswith("standard")
    assert not (tmp_path / "a.scores.jsonl").exists()


def test_cli_rich_table_on_stdout(tmp_path, wordnet):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    answers = _answers(tmp_path / "a.jsonl", ["The audio is rock."] * len(MUSICQA_EXCERPT))
    result = runner.invoke(app, ["eval", "-p", str(answers), "-r", str(refs), "--no-bertscore"])
    assert result.exit_code == 0, result.output
    assert "profile standard" in result.stdout and "BLEU-4 (corpus, 13a)" in result.stdout and "floor" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EvalMusicQA.json", "a.jsonl"]  # nothing beside the inputs


def test_cli_errors_are_one_line(tmp_path):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for args, code in [
        (["-p", str(empty), "-r", str(refs)], 1),
        (["-p", str(refs), "--profile", "bleurt"], 2),
        (["--split", "musicqa", "--data", str(refs), "--model", "ckpt"], 2),
    ]:
        result = runner.invoke(app, ["eval", "--no-bertscore", *args])
        assert result.exit_code != 0
        assert isinstance(result.exception, (DataError, ConfigError)), result.output
        assert result.exception.exit_code == code and "\n" not in str(result.exception)


def test_missing_reference_lists_ids(tmp_path):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    answers = write_jsonl(
        tmp_path / "a.jsonl", [{"id": "nope:1", "answer": "x"}, {"id": "012542.wav:0", "answer": "y"}]
    )
    with pytest.raises(DataError, match="nope:1"):
        run(EvalConfig(predictions=[answers], references=refs, bertscore=False, write_per_item=False))


def test_split_file_without_test_items_is_one_line_error(tmp_path):
    mi = tmp_path / "mi.json"
    mi.write_text(json.dumps({"QA": [{"question": "q", "answer": "a", "ytid": "x", "is_audioset_eval": False}]}))
    with pytest.raises(DataError, match="no test items") as err:
        load_split_items("mi-short", mi)
    assert "\n" not in str(err.value)


def test_cli_plot_of_caption_scores_against_the_floor(tmp_path, wordnet):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    a = _answers(tmp_path / "a.jsonl", ["The audio is rock."] * len(MUSICQA_EXCERPT))
    b = _answers(tmp_path / "b.jsonl", ["A slow piano piece."] * len(MUSICQA_EXCERPT))
    png = tmp_path / "scores.png"
    result = runner.invoke(
        app,
        [
            "eval",
            "-p",
            str(a),
            str(b),
            "--references",
            str(refs),
            "--no-bertscore",
            "--no-per-item",
            "--format",
            "json",
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"plot written to {png}" in result.stderr and "plot written" not in result.stdout


@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("--plot", ".", "is a folder: give a file name in it"),
        ("--plot", "scores", "give a picture file name ending in .png"),
        ("--plot", "missing/scores.png", "does not exist; create it first"),
        ("--output", ".", "is a folder: give a file name in it"),
        ("--output", "missing/out.md", "does not exist; create it first"),
        ("--output", "a.jsonl", "is also --predictions: writing it would destroy that file"),
        ("--output", "EvalMusicQA.json", "is also --references: writing it would destroy that file"),
        ("--per-item", "a.jsonl", "is also --predictions: writing it would destroy that file"),
        ("--per-item", "missing/a.scores.jsonl", "does not exist; create it first"),
        ("--plot", "a.jsonl/x.png", "a.jsonl is not a folder"),
        ("--bertscore-model", "no-bert", "no such model folder; check the path"),
    ],
)
def test_cli_refuses_an_unwritable_plot_or_output_before_scoring(tmp_path, monkeypatch, capsys, option, name, message):
    """Through the console script (its error policy): one line on stderr, exit 2, nothing scored or written."""
    import sys

    from musilingo_cli.cli import main

    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    answers = _answers(tmp_path / "a.jsonl", ["The audio is rock."] * len(MUSICQA_EXCERPT))
    bert = ["--bertscore-layers", "2"] if option == "--bertscore-model" else ["--no-bertscore"]
    args = ["eval", "-p", str(answers), "--references", str(refs), *bert, option, str(tmp_path / name)]
    monkeypatch.setattr(sys, "argv", ["musilingo", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.scores.jsonl"))


def test_plot_and_output_on_one_file_are_refused_and_no_floor_means_no_floor_lines(tmp_path, wordnet):
    refs = musicqa_json(tmp_path / "EvalMusicQA.json")
    answers = _answers(tmp_path / "a.jsonl", ["The audio is rock."] * len(MUSICQA_EXCERPT))
    same = tmp_path / "same.png"
    with pytest.raises(ConfigError, match="--plot .* is also --output"):
        run(EvalConfig(predictions=[answers], references=refs, bertscore=False, output=same, plot=same))
    from musilingo_cli.pipelines.evaluate.report import render_text

    report = run(EvalConfig(predictions=[answers], references=refs, bertscore=False, floor=False))
    text = render_text(report, "markdown")
    assert "floor" not in text and "ROUGE-L" in text
    assert "floor" in render_text(run(EvalConfig(predictions=[answers], references=refs, bertscore=False)), "markdown")
