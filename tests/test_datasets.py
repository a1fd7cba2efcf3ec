"""Dataset readers on small files in the real schemas, audio lookup, and the missing-audio check.

`data/musicqa_eval_excerpt.json` is six real items of MusicQA's EvalMusicQA.json (MU-LLaMA,
github shansongliu/MU-LLaMA, MIT per the dataset card); `data/musiccaps_excerpt.csv` is real
MusicCaps (CC BY-SA 4.0). The other schemas (MI, LP-MusicCaps-MSD) are not redistributable
here, so the tests write small files with their exact keys and layouts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audio_helpers import write_tone

from musilingo_cli.core.errors import DataError
from musilingo_cli.data.datasets import check_missing, detect_format, find_audio, load_examples, read_dataset
from musilingo_cli.model.config import CAPTION_INSTRUCTION

DATA = Path(__file__).parent / "data"
MSD_ROWS = [
    {
        "track_id": f"TR{i:03d}",
        "title": f"t{i}",
        "artist_name": "a",
        "release": "r",
        "year": 2000 + i,
        "tag": ["rock", "pop"],
        "caption_writing": f"caption writing {i}",
        "caption_summary": "s",
        "caption_paraphrase": "p",
        "caption_attribute_prediction": "c",
        "path": f"{i}/{i}/TR{i:03d}.clip",
    }
    for i in range(5)
]


def _musiccaps_rows():
    with (DATA / "musiccaps_excerpt.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_musiccaps_csv_train_split_and_any_extension(tmp_path):
    rows = _musiccaps_rows()
    train = [r for r in rows if r["is_audioset_eval"] == "False"]
    test = [r for r in rows if r["is_audioset_eval"] == "True"]
    audio = tmp_path / "audio"
    audio.mkdir()
    for r, suffix in zip(train[:3], [".wav", ".flac", ".ogg"]):
        write_tone(audio / f"{r['ytid']}{suffix}", 0.1, 24000)
    assert detect_format(DATA / "musiccaps_excerpt.csv") == "musiccaps"
    loaded = load_examples([DATA / "musiccaps_excerpt.csv"], audio)
    assert loaded.total == len(train) and len(test) > 0
    assert [e.id for e in loaded.examples] == [r["ytid"] for r in train[:3]]
    assert [e.audio.suffix for e in loaded.examples] == [".wav", ".flac", ".ogg"]
    ex = loaded.examples[0]
    assert ex.question == CAPTION_INSTRUCTION and ex.answer == train[0]["caption"] and ex.crop_seconds is None
    assert len(loaded.missing) == len(train) - 3
    assert len(read_dataset(DATA / "musiccaps_excerpt.csv", "musiccaps", "test")) == len(test)
    assert len(read_dataset(DATA / "musiccaps_excerpt.csv", "musiccaps", "all")) == len(rows)


def test_missing_fraction_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"\d+ of \d+ items .* missing audio.*--audio-dir"):
        loaded = load_examples([DATA / "musiccaps_excerpt.csv"], tmp_path)
        check_missing(len(loaded.missing), loaded.total, 0.05, loaded.missing[0])
    check_missing(1, 100, 0.05, "x")  # 1% is allowed


def test_music_instruct_short_long_and_mixed(tmp_path):
    items = [
        {
            "question": "What is the tempo?",
            "answer": "Fast.",
            "ytid": "abc",
            "is_audioset_eval": False,
            "sampling_rate": 48000,
            "caption": "c",
        },
        {
            "question": "Describe the mood in detail.",
            "answer": "It is a long answer about a sad mood.",
            "ytid": "def",
            "is_audioset_eval": False,
            "sampling_rate": 44100,
        },
        {
            "question": "Which instrument?",
            "answer": "Piano.",
            "ytid": "abc",
            "is_audioset_eval": True,
            "sampling_rate": 48000,
        },
    ]
    path = tmp_path / "music_instruct.json"
    path.write_text(json.dumps({"QA": items}))
    write_tone(tmp_path / "abc.mp3", 0.2, 44100)
    assert detect_format(path) == "mi"
    loaded = load_examples([path], tmp_path)
    assert [(e.question, e.answer, e.audio.name) for e in loaded.examples] == [
        ("What is the tempo?", "Fast.", "abc.mp3")
    ]
    assert loaded.missing == [str(tmp_path / "def")] and loaded.total == 2
    assert [e.answer for e in read_dataset(path, "mi", "test")] == ["Piano."]


def test_musicqa_real_excerpt(tmp_path):
    path = DATA / "musicqa_eval_excerpt.json"
    raw = json.loads(path.read_text())
    for name in {r["audio_name"] for r in raw}:
        write_tone(tmp_path / name, 0.2, 16000)
    assert detect_format(path) == "musicqa"
    loaded = load_examples([path], tmp_path)
    assert len(loaded.examples) == len(raw) and not loaded.missing
    for ex, r in zip(loaded.examples, raw):
        assert ex.audio == tmp_path / r["audio_name"]
        assert (ex.question, ex.answer) == (r["conversation"][0]["value"], r["conversation"][1]["value"])
        assert ex.crop_seconds == 15.5


def _msd_audio(root: Path, with_suffix: str) -> None:
    for row in MSD_ROWS[:4]:
        target = root / (row["path"] + with_suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_tone(target, 0.1, 22050)


def _check_msd(loaded, root: Path, suffix: str):
    assert [e.answer for e in loaded.examples] == [r["caption_writing"] for r in MSD_ROWS[:4]]
    assert [e.audio for e in loaded.examples] == [root / (r["path"] + suffix) for r in MSD_ROWS[:4]]
    assert all(e.question is None and e.crop_seconds == 30.5 for e in loaded.examples)
    assert loaded.missing == [str(root / MSD_ROWS[4]["path"])]


@pytest.mark.parametrize("kind", ["json", "jsonl", "parquet"])
def test_msd_files(tmp_path, kind):
    path = tmp_path / f"msd.{kind}"
    if kind == "json":
        path.write_text(json.dumps(MSD_ROWS))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in MSD_ROWS))
    else:
        pq.write_table(pa.Table.from_pylist(MSD_ROWS), path)
    _msd_audio(tmp_path / "msd", ".mp3")  # MSD paths carry no extension: .mp3 is tried
    assert detect_format(path) == "msd"
    _check_msd(load_examples([path], tmp_path / "msd"), tmp_path / "msd", ".mp3")


def _save_to_disk(folder: Path, rows: list[dict], shards: int = 2) -> None:
    """The layout `datasets.Dataset.save_to_disk` writes: arrow IPC streams + state.json."""
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    names = []
    for k in range(shards):
        part = table.slice(k * len(rows) // shards, (k + 1) * len(rows) // shards - k * len(rows) // shards)
        names.append(f"data-{k:05d}-of-{shards:05d}.arrow")
        with pa.OSFile(str(folder / names[-1]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(part)
    (folder / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": n} for n in names], "_split": folder.name})
    )
    (folder / "dataset_info.json").write_text(json.dumps({"features": {k: {} for k in rows[0]}}))


def test_msd_save_to_disk_dataset_dict(tmp_path):
    root = tmp_path / "lp-musiccaps-msd"
    _save_to_disk(root / "train", MSD_ROWS)
    _save_to_disk(root / "test", MSD_ROWS[:1], shards=1)
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    _msd_audio(tmp_path / "audio", ".wav")  # any extension is found by stem
    assert detect_format(root) == "msd"
    _check_msd(load_examples([root], tmp_path / "audio"), tmp_path / "audio", ".wav")
    assert len(read_dataset(root, "msd", "test")) == 1
    with pytest.raises(DataError, match="no split 'valid'.*--split"):
        read_dataset(root, "msd", "valid")


def test_plain_jsonl_relative_to_its_folder(tmp_path):
    write_tone(tmp_path / "mine.wav", 0.1, 24000)
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"audio": "mine.wav", "question": "Genre?", "answer": "Rock."})
        + "\n"
        + json.dumps({"audio": "gone.wav", "question": "", "answer": "x"})
        + "\n"
    )
    loaded = load_examples([path], None)
    assert [(e.audio, e.question, e.answer) for e in loaded.examples] == [(tmp_path / "mine.wav", "Genre?", "Rock.")]
    assert loaded.missing == [str(tmp_path / "gone.wav")]


def test_bad_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        detect_format(bad)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(DataError, match="--format"):
        detect_format(odd)
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps([{"audio_name": "a.wav"}]))
    with pytest.raises(DataError, match="item 0 has no conversation"):
        read_dataset(qa, "musicqa")
    with pytest.raises(DataError, match="no such dataset"):
        detect_format(tmp_path / "none.json")


def test_find_audio_prefers_the_exact_name(tmp_path):
    write_tone(tmp_path / "x.wav", 0.1, 24000)
    write_tone(tmp_path / "x.flac", 0.1, 24000)
    assert find_audio(tmp_path, "x", "mi") == tmp_path / "x.wav"
    assert find_audio(tmp_path, "x.flac", "musicqa") == tmp_path / "x.flac"
    assert find_audio(tmp_path, "y", "mi") is None
