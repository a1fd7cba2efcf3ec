"""The installed console script with tiny real models: files we rightly refuse (each refusal is
one line on stderr that names the file and the fix, with a non-zero exit, and no code in a pickle
ever runs), and `ask` printing records in input order. Real pickles, CSV, JSONL and audio."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from audio_helpers import write_music
from test_cli_script import musilingo
from train_helpers import make_parts


class _RunsCode:
    """Unpickling this calls print(): what a booby-trapped weights file would do."""

    def __reduce__(self):
        return (print, ("CODE FROM THE PICKLE RAN",))


def _trap(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"weight": _RunsCode()}))
    return path


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusals")
    llm, mert = make_parts(root)
    write_music(root / "song.wav", 1.0, 16000)
    return {"root": root, "llm": llm, "mert": mert, "song": root / "song.wav"}


def _one_line_naming(done, name: str, *words: str) -> str:
    assert done.returncode != 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr  # warnings may come before it
    assert done.stderr.rstrip().endswith(errors[0])
    assert name in errors[0] and all(w in errors[0] for w in words), errors[0]
    assert "CODE FROM THE PICKLE RAN" not in done.stdout + done.stderr
    return errors[0]


@pytest.mark.parametrize("part", ["mert", "llm"])
def test_a_pickle_with_code_in_an_encoder_or_llm_folder(parts, tmp_path, part):
    folder = tmp_path / part
    shutil.copytree(parts[part], folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    trap = _trap(folder / "pytorch_model.bin")
    args = {"encoder": parts["mert"], "llm": parts["llm"], part if part == "llm" else "encoder": folder}
    done = musilingo(
        "ask", str(parts["song"]), "What genre?", "--encoder", str(args["encoder"]), "--llm", str(args["llm"])
    )
    _one_line_naming(done, str(trap), "refused", "safetensors")


@pytest.mark.parametrize(("encoder", "llm", "named"), [("llm", "mert", "llm"), ("mert", "mert", "mert")])
def test_swapped_encoder_and_llm_are_named_as_swapped(parts, encoder, llm, named):
    done = musilingo(
        "ask", str(parts["song"]), "What genre?", "--encoder", str(parts[encoder]), "--llm", str(parts[llm])
    )
    _one_line_naming(done, str(parts[named]), "did you swap --encoder and --llm?")


def test_a_pickle_renamed_adapter_safetensors(parts, tmp_path):
    import torch

    from musilingo_cli.model.checkpoint import save_checkpoint
    from musilingo_cli.model.config import ModelConfig

    config = ModelConfig.for_stage("finetune", encoder=str(parts["mert"]), llm=str(parts["llm"]))
    checkpoint = save_checkpoint(tmp_path / "ckpt", config, {"proj.weight": torch.zeros(2, 2)})
    trap = _trap(checkpoint / "adapter.safetensors")
    done = musilingo("ask", str(parts["song"]), "What genre?", "--model", str(checkpoint))
    _one_line_naming(done, str(trap), "not a safetensors file")


def test_crop_seconds_that_is_not_a_number_in_training_data(parts, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"audio": "song.wav", "question": "q", "answer": "a", "crop_seconds": "abc"}) + "\n")
    done = musilingo(
        "train",
        "--data",
        str(data),
        "--audio-dir",
        str(parts["root"]),
        "--encoder",
        str(parts["mert"]),
        "--llm",
        str(parts["llm"]),
        "--out",
        str(tmp_path / "run"),
        env={"DS_ACCELERATOR": "cpu"},
    )
    _one_line_naming(done, str(data), "crop_seconds", "'abc'")


def _csv_with_an_unclosed_quote(path: Path, header: str, first: str) -> Path:
    path.write_text(f"{header}\n{first}\n" + 'x,"this quote never closes\n' + "more text\n" * 20_000)
    return path


def test_a_csv_field_over_128_kb_in_a_manifest_and_in_captions(parts, tmp_path):
    manifest = _csv_with_an_unclosed_quote(tmp_path / "m.csv", "path,question", f"{parts['song']},q")
    done = musilingo("ask", "--manifest", str(manifest), "--encoder", str(parts["mert"]), "--llm", str(parts["llm"]))
    _one_line_naming(done, str(manifest), "128 KB", "quot")
    captions = _csv_with_an_unclosed_quote(tmp_path / "c.csv", "ytid,caption", "a,A slow song.")
    done = musilingo("make-mi", "--captions", str(captions), "--dry-run", "-o", str(tmp_path / "mi"))
    _one_line_naming(done, str(captions), "128 KB", "quot")


def test_ask_prints_records_in_input_order(parts, tmp_path):
    names = []
    for name, seconds in (("b_two.wav", 2.0), ("a_one.wav", 1.0), ("c_three.wav", 3.0)):  # neither sorted way
        write_music(tmp_path / name, seconds, 16000, seed=len(names))
        names.append(str(tmp_path / name))
    done = musilingo(
        "ask",
        *names,
        "-q",
        "What genre?",
        "-q",
        "Describe it.",
        "--encoder",
        str(parts["mert"]),
        "--llm",
        str(parts["llm"]),
        "--preset",
        "greedy",
        "--max-new-tokens",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr  # transformers' loading bars only with --verbose
    rows = [line.split("\t")[:2] for line in done.stdout.splitlines()]
    assert rows == [[n, q] for n in names for q in ("What genre?", "Describe it.")]


def test_a_checkpoint_made_with_relative_part_paths_answers_from_another_directory(parts, tmp_path, monkeypatch):
    import dataclasses

    from model_helpers import build_model

    from musilingo_cli.model.checkpoint import read_checkpoint, save_checkpoint

    if not (parts["root"] / "mert").exists():
        (parts["root"] / "mert").symlink_to(parts["mert"])  # build_model's name for the module's encoder
    model = build_model(parts["root"])  # reuses the module's tiny parts: same folders, same shapes
    monkeypatch.chdir(parts["root"])  # the user trained with --encoder mert --llm llm from here
    relative = dataclasses.replace(model.config, encoder="mert", llm="llm")
    checkpoint = save_checkpoint(tmp_path / "run" / "final", relative, model.trainable_state())
    monkeypatch.chdir(tmp_path)
    config, _ = read_checkpoint(checkpoint)
    assert Path(config.encoder) == parts["mert"].resolve() and Path(config.llm) == parts["llm"].resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = musilingo(
        "ask",
        str(parts["song"]),
        "What genre?",
        "--model",
        str(checkpoint),
        "--preset",
        "greedy",
        "--max-new-tokens",
        "2",
        cwd=elsewhere,
    )
    assert done.returncode == 0, done.stderr


def _base_install_env(tmp_path: Path, *blocked: str) -> dict[str, str]:
    """An interpreter whose site-packages lacks `blocked` distributions, as after a plain
    `pip install musilingo-cli`: a folder of links to every other entry replaces site-packages."""
    import site

    real = Path(site.getsitepackages()[0])
    shadow = tmp_path / "site-packages"
    shadow.mkdir()
    names = tuple(b.lower() for b in blocked)
    for entry in real.iterdir():
        if not entry.name.lower().replace("-", "_").startswith(names):
            (shadow / entry.name).symlink_to(entry)
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(
        f"import sys\nsys.path[:] = [p for p in sys.path if p != {str(real)!r}] + [{str(shadow)!r}]\n"
    )
    return {"PYTHONPATH": str(boot)}


def test_the_base_install_answers_with_ask(parts, tmp_path):
    """Without any extra (no DeepSpeed, openai, metric libraries, pyarrow, TensorBoard, matplotlib,
    pandas installed), `ask` still answers."""
    env = _base_install_env(
        tmp_path,
        "deepspeed",
        "openai",
        "nltk",
        "rouge_score",
        "bert_score",
        "sacrebleu",
        "pyarrow",
        "tensorboard",
        "matplotlib",
        "pandas",
    )
    probe = musilingo("train", "--data", "x.jsonl", env=env)
    assert "pip install 'musilingo-cli[train]'" in probe.stderr  # the extras really are gone
    done = musilingo(
        "ask",
        str(parts["song"]),
        "What genre?",
        "--encoder",
        str(parts["mert"]),
        "--llm",
        str(parts["llm"]),
        "--preset",
        "greedy",
        "--max-new-tokens",
        "3",
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["error"] is None and record["question"] == "What genre?"


def test_mp3_decoder_notes_only_with_verbose(parts, tmp_path):
    import numpy as np
    import soundfile as sf

    clean = tmp_path / "clean.mp3"
    sf.write(clean, (0.3 * np.sin(np.arange(48000) * 0.05)).astype("float32"), 24000, format="MP3")
    data = clean.read_bytes()
    broken = tmp_path / "broken.mp3"  # junk inside the stream: libmpg123 resyncs and prints notes on fd 2
    broken.write_bytes(data[:2000] + b"\x00garbage" * 50 + data[2000:])
    args = [
        "ask",
        str(broken),
        "What genre?",
        "--encoder",
        str(parts["mert"]),
        "--llm",
        str(parts["llm"]),
        "--preset",
        "greedy",
        "--max-new-tokens",
        "2",
    ]
    quiet, loud = musilingo(*args), musilingo(*args, "--verbose")
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert "Illegal Audio-MPEG-Header" in loud.stderr  # the file does make the decoder talk
    assert "Audio-MPEG" not in quiet.stderr and "libmpg123" not in quiet.stderr
