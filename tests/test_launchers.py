"""`musilingo train` as the docs launch it: the installed console script (only the final path on
stdout, our progress on stderr, DeepSpeed's accelerator notice nowhere without --verbose) and the
documented DeepSpeed launcher line `deepspeed --num_gpus N --module musilingo_cli train ...` (it
passes --local_rank before the subcommand) with two CPU ranks. The documented torchrun line runs
in test_train_dist.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import free_port, make_parts, subprocess_env, train_config, write_clips, write_qa_jsonl, yaml_config

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    llm, mert = make_parts(root)
    names = write_clips(root / "audio", 4)
    data = write_qa_jsonl(root / "qa.jsonl", names)
    config = train_config(
        root,
        llm,
        mert,
        data,
        root / "audio",
        max_steps=2,
        save_every=2,
        warmup_steps=1,
        micro_batch=1,
        grad_accum=1,
        cache_dir=str(root / "cache"),
    )
    return {"root": root, "config": yaml_config(root / "train.yaml", config)}


def test_console_script_prints_only_the_final_path_on_stdout(setup):
    out = setup["root"] / "plain"
    env = subprocess_env()
    env.pop("DS_ACCELERATOR")  # DeepSpeed then detects the CPU and says so, unless we keep it quiet
    done = subprocess.run(
        [str(BIN / "musilingo"), "train", "--config", str(setup["config"]), "-o", str(out), "--warmup-steps", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == f"{out / 'final'}\n"
    # library chatter (DeepSpeed's accelerator notice) is off unless --verbose; our own lines stay on stderr
    assert "Setting accelerator to CPU" not in done.stderr and "[WARNING]" not in done.stderr, done.stderr
    assert "training " in done.stderr and "done: 2 steps" in done.stderr
    # --warmup-steps is a flag, and a run that ends inside the warm-up says so, once
    assert " ".join(done.stderr.split()).count("the run ends inside the warm-up (2 steps, warm-up 5)") == 1


def test_train_help_shows_each_presets_recipe_and_the_defaults():
    from musilingo_cli.pipelines.train.config import PRESETS, TrainConfig

    done = subprocess.run(
        [str(BIN / "musilingo"), "train", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**subprocess_env(), "COLUMNS": "2000"},
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for name, recipe in PRESETS.items():
        assert f"{name}: {recipe['max_steps']} steps, warm-up {recipe['warmup_steps']} " in text
    assert f"[default: ({TrainConfig.save_every})]" in text and "--warmup-steps" in text


def test_documented_deepspeed_launcher_line_two_cpu_ranks(setup):
    out = setup["root"] / "deepspeed"
    command = [
        str(BIN / "deepspeed"),
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
        "--module",
        "musilingo_cli",
        "train",
        "--config",
        str(setup["config"]),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "--local_rank=1" in done.stdout  # the launcher passed it, and we accepted it
    assert "2 process(es)" in done.stderr.replace("\n", " ")
    assert (out / "final" / "adapter.safetensors").exists()
    assert sorted(p.name for p in (out / "deepspeed" / "step_2").glob("zero_pp_rank_*")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
