"""Tiny training set-ups for the train, datasets and features tests: real tiny models
(tests/model_helpers.py), real audio files (tests/audio_helpers.py), real dataset files.

`subprocess_env()` is the environment for `python -m musilingo_cli train` / torchrun children:
offline, CPU accelerator, one thread per rank (2 cores), and the repository on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from audio_helpers import write_music
from model_helpers import make_llm, make_mert

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ANSWERS = [
    "It is rock.",
    "A calm piano piece.",
    "Fast electronic dance music.",
    "A sad violin melody.",
    "Jazz with a walking bass.",
    "Loud drums and guitar.",
    "A quiet folk song.",
    "Bright synth pop.",
]
QUESTIONS = ["What genre is this?", "Describe the audio.", "What is the tempo?", "What instruments are playing?"]


def make_parts(root: Path, mert_seed: int = 0) -> tuple[Path, Path]:
    """A tiny LLM (with its tokenizer) and a tiny MERT under `root` (built once per folder)."""
    root = Path(root)
    if not (root / "llm" / "config.json").exists():
        make_llm(root / "llm")
    mert = root / f"mert{mert_seed}"
    if not (mert / "config.json").exists():
        make_mert(mert, seed=mert_seed)
    return root / "llm", mert


def write_clips(audio_dir: Path, n: int, seconds: float = 1.0, sr: int = 24000, suffix: str = ".wav") -> list[str]:
    """`n` different synthetic music clips named clip{i}{suffix}; returns the file names."""
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        write_music(audio_dir / f"clip{i}{suffix}", seconds, sr, seed=100 + i)
        names.append(f"clip{i}{suffix}")
    return names


def write_qa_jsonl(path: Path, names: list[str], with_questions: bool = True) -> Path:
    """Users' plain JSONL: one {audio, question, answer} per clip."""
    with Path(path).open("w") as f:
        for i, name in enumerate(names):
            q = QUESTIONS[i % len(QUESTIONS)] if with_questions else ""
            f.write(json.dumps({"audio": name, "question": q, "answer": ANSWERS[i % len(ANSWERS)]}) + "\n")
    return Path(path)


def train_config(tmp: Path, llm: Path, mert: Path, data: Path, audio_dir: Path, **overrides):
    """A fast TrainConfig: fp32, tiny pool window (several audio tokens per 1 s clip)."""
    from musilingo_cli.pipelines.train import resolve_config

    values = dict(
        stage="finetune",
        data=[str(data)],
        audio_dir=str(audio_dir),
        out=str(tmp / "run"),
        encoder=str(mert),
        llm=str(llm),
        pool_window=8,
        precision="fp32",
        max_steps=6,
        micro_batch=2,
        grad_accum=2,
        lr=1e-2,
        min_lr=1e-3,
        warmup_lr=1e-3,
        warmup_steps=2,
        save_every=3,
        encode_batch=4,
        tensorboard=False,
        seed=7,
    )
    values.update(overrides)
    return resolve_config(values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for training children: offline, CPU DeepSpeed, no rank variables inherited."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def torchrun_command(ranks: int, *args: str) -> list[str]:
    """`torchrun --nproc_per_node RANKS ... -m musilingo_cli ARGS` on a free local port, as the docs give it."""
    launcher = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks)]
    return [*launcher, "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "musilingo_cli", *args]


def run_own_session(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run `command` (text output captured) in its own process group, so a hang is killed with all
    its workers instead of being left running after the test."""
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def yaml_config(path: Path, config) -> Path:
    """Write a TrainConfig as the YAML that --config reads."""
    from musilingo_cli.pipelines.train.config import config_yaml

    Path(path).write_text(config_yaml(config))
    return Path(path)


@pytest.fixture
def dist_env(monkeypatch):
    """One process: the rank variables run() would otherwise set for good."""
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
