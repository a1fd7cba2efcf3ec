"""`musilingo train` as users run it, in child processes: kill -9 mid-run and --resume gives
the same per-step losses as an uninterrupted run; two ranks under torchrun (gloo): ZeRO-2 with
ranks that drift apart in the cache pass, and ZeRO-3 without the cache, resumed from a damaged
run; the final checkpoint answers through `musilingo ask`."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from audio_helpers import write_corrupt
from train_helpers import (
    PYTHON,
    make_parts,
    run_own_session,
    subprocess_env,
    torchrun_command,
    train_config,
    write_clips,
    write_qa_jsonl,
    yaml_config,
)

from musilingo_cli.core.journal import read_jsonl

STEPS = 24


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    llm, mert = make_parts(root)
    names = write_clips(root / "audio", 8)
    data = write_qa_jsonl(root / "qa.jsonl", names)
    config = train_config(
        root,
        llm,
        mert,
        data,
        root / "audio",
        max_steps=STEPS,
        save_every=3,
        lr=5e-3,
        warmup_steps=4,
        cache_dir=str(root / "cache"),
    )
    return {"root": root, "config": yaml_config(root / "train.yaml", config), "audio": root / "audio"}


def _train(setup, out, *extra, timeout=240):
    command = [PYTHON, "-m", "musilingo_cli", "train", "--config", str(setup["config"]), "--out", str(out), *extra]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _losses(out):
    return {r["step"]: (r["loss"], r["lr"]) for r in read_jsonl(out / "metrics.jsonl")}


def test_killed_run_resumed_gives_the_same_losses_and_answers_through_ask(setup):
    root = setup["root"]
    done = _train(setup, root / "straight")
    assert done.stdout.strip().endswith("final")
    straight = _losses(root / "straight")
    assert sorted(straight) == list(range(1, STEPS + 1))

    out = root / "killed"
    command = [PYTHON, "-m", "musilingo_cli", "train", "--config", str(setup["config"]), "--out", str(out)]
    proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not (out / "checkpoints" / "step_3" / "musilingo.json").exists() and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _losses(out)
    assert 3 <= len(before) < STEPS, "the run finished before it could be killed"

    with pytest.raises(AssertionError, match="--resume"):  # an existing run is never overwritten silently
        _train(setup, out)
    _train(setup, out, "--resume")
    resumed = _losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert resumed[step][1] == straight[step][1]
        assert resumed[step][0] == pytest.approx(straight[step][0], abs=1e-6), step

    audio = setup["audio"] / "clip0.wav"
    asked = subprocess.run(
        [
            PYTHON,
            "-m",
            "musilingo_cli",
            "ask",
            str(audio),
            "What genre is this?",
            "--model",
            str(out / "final"),
            "--preset",
            "greedy",
            "--max-new-tokens",
            "8",
            "--json",
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert asked.returncode == 0, asked.stderr[-2000:]
    record = json.loads(asked.stdout.strip().splitlines()[-1])
    assert record["question"] == "What genre is this?" and isinstance(record["answer"], str)


def _torchrun(setup, out, *extra, env=None, timeout=300):
    command = torchrun_command(2, "train", "--config", str(setup["config"]), "--out", str(out), *extra)
    return run_own_session(command, subprocess_env(**(env or {})), timeout)


def test_two_ranks_under_torchrun_zero2(setup):
    out = setup["root"] / "torchrun"
    # rank 1 hashes audio slowly, so the ranks drift apart during the cache pass (a test-only hook)
    done = _torchrun(
        setup,
        out,
        "--max-steps",
        "4",
        "--save-every",
        "2",
        "--cache-dir",
        str(out / "features"),
        env={"MUSILINGO_TEST_SLOW_HASH": "1:1.0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(_losses(out)) == [1, 2, 3, 4]
    assert all(r["samples_per_s"] > 0 for r in read_jsonl(out / "metrics.jsonl"))
    state = out / "deepspeed" / "step_4"
    assert sorted(p.name for p in state.glob("zero_pp_rank_*")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    assert (out / "final" / "adapter.safetensors").exists()
    err = done.stderr.replace("\n", " ")
    assert "2 process(es)" in err
    # every clip was encoded exactly once, by one of the two ranks, into the one shared cache; none dropped
    assert "0 hits, 8 crops encoded" in err and "on 8 examples (0 skipped)" in err
    assert len(list((out / "features").glob("*/*.safetensors"))) == 8
    hashed = [len(read_jsonl(out / "features" / f"audio_hashes.{r}.jsonl")) for r in (0, 1)]
    assert hashed == [4, 4]  # each file hashed once, the work spread over the ranks
    # each rank saved its own random state
    rng = [torch.load(state / f"rng_rank{r}.pt", weights_only=True)["torch"] for r in (0, 1)]
    assert not torch.equal(rng[0], rng[1])

    # the same --out again without --resume: every rank stops with one line, none waits at a barrier
    again = _torchrun(setup, out, "--max-steps", "4", timeout=180)
    assert again.returncode != 0
    assert again.stderr.count("already holds a training run") == 2  # one line from each rank
    assert "musilingo_cli/" not in again.stderr  # no traceback from our code (torchrun prints its own summary)


def test_two_ranks_zero3_without_cache_then_resume_from_a_damaged_run(setup, tmp_path):
    """ZeRO-3 and the encoder in the loop on two ranks, with one unreadable clip: the rank whose
    micro-batch (of 1) is that clip still runs a forward pass, so the other's all-gathers do not
    hang. Then the newest state is cut to 0 bytes and a two-rank --resume continues from the
    previous one with the same losses."""
    audio = setup["audio"]
    write_corrupt(audio / "broken.wav")
    names = [f"clip{i}.wav" for i in range(7)] + ["broken.wav"]
    data = write_qa_jsonl(tmp_path / "qa.jsonl", names)
    out = tmp_path / "run"
    args = (
        "--data",
        str(data),
        "--zero-stage",
        "3",
        "--no-cache",
        "--micro-batch",
        "1",
        "--grad-accum",
        "1",
        "--max-steps",
        "4",
        "--save-every",
        "2",
    )  # 4 steps x 1 item: each rank reads all 4 items of its shard
    done = _torchrun(setup, out, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4]
    assert sorted(p.name for p in (out / "deepspeed" / "step_4").glob("zero_pp_rank_*model_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_model_states.pt",
        "zero_pp_rank_1_mp_rank_00_model_states.pt",
    ]

    for state in (out / "deepspeed" / "step_4").iterdir():
        state.write_bytes(b"")  # a power cut
    resumed = _torchrun(setup, out, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    err = resumed.stderr.replace("\n", " ")
    assert "step_4 is damaged" in err and "at step 2" in err
    again = _losses(out)
    assert sorted(again) == [1, 2, 3, 4]
    for step in (3, 4):
        assert again[step][1] == losses[step][1]
        assert again[step][0] == pytest.approx(losses[step][0], abs=1e-6), step
