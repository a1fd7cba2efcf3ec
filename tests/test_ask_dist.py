"""`ask` on several ranks as users run it: `torchrun -m musilingo_cli ask ... -o out.jsonl` with two
CPU ranks (gloo) over a folder of real WAV files, against a single-process run under greedy decoding;
one rank killed with SIGKILL mid-run, then a rerun with ONE rank completes without asking anything
twice; and the part files' bookkeeping (stable owners, merge, leftovers of any world size) in process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from audio_helpers import write_music
from model_helpers import build_model
from train_helpers import run_own_session, subprocess_env, torchrun_command

from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.data.inputs import item_id
from musilingo_cli.model.checkpoint import save_checkpoint
from musilingo_cli.pipelines.ask import AskConfig, run
from musilingo_cli.pipelines.ask_shards import Shard, merge, owner, part_files, part_path

QUESTION = "What genre is this?"
PER_RANK = 5  # items each of the two ranks owns


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint, a folder of WAV files (PER_RANK owned by each of two ranks, so the split is
    even whatever the temporary path hashes to), and a single-process greedy reference run."""
    root = tmp_path_factory.mktemp("askdist")
    model = build_model(root)
    save_checkpoint(root / "ckpt", model.config, model.trainable_state())
    audio = root / "audio"
    audio.mkdir()
    owned = {0: [], 1: []}
    k = 0
    while min(len(v) for v in owned.values()) < PER_RANK:
        path = audio / f"song{k:03d}.wav"
        rank = owner(item_id(path, QUESTION), 2)
        if len(owned[rank]) < PER_RANK:
            write_music(path, 1.0 + 0.5 * (k % 3), 24000, seed=300 + k)  # three lengths: several batch shapes
            owned[rank].append(item_id(path, QUESTION))
        k += 1
    reference = root / "single.jsonl"
    run(_config(root, audio, reference), model=model)
    order = [item_id(p, QUESTION) for p in sorted(audio.glob("*.wav"))]
    return {"root": root, "audio": audio, "model": model, "reference": read_jsonl(reference), "order": order}


def _config(root: Path, audio: Path, output: Path, **extra) -> AskConfig:
    model = str(root / "ckpt")
    return AskConfig(
        inputs=[str(audio)], questions=[QUESTION], model=model, output=output, device="cpu", **_GREEDY, **extra
    )


_GREEDY = {"preset": "greedy", "max_new_tokens": 16, "batch_size": 2}


def _command(setup, out: Path, ranks: int) -> list[str]:
    return torchrun_command(
        ranks,
        "ask",
        str(setup["audio"]),
        QUESTION,
        "--model",
        str(setup["root"] / "ckpt"),
        "--preset",
        "greedy",
        "--max-new-tokens",
        str(_GREEDY["max_new_tokens"]),
        "--batch-size",
        str(_GREEDY["batch_size"]),
        "--device",
        "cpu",
        "--workers",
        "1",
        "-o",
        str(out),
        "--json",
    )


def _torchrun(setup, out: Path, ranks: int, timeout: int = 240) -> subprocess.CompletedProcess:
    return run_own_session(_command(setup, out, ranks), subprocess_env(), timeout)


def _answered(stderr: str) -> dict[int, int]:
    """{rank: answered} from each rank's summary line."""
    return {int(r): int(n) for r, n in re.findall(r"\(rank (\d+) of \d+\): answered (\d+)", stderr)}


def _answers(records: list[dict]) -> dict[str, str]:
    return {r["id"]: r["answer"] for r in records}


def test_two_ranks_answer_each_item_once_and_merge_equal_to_one_process(setup, tmp_path):
    out = tmp_path / "answers.jsonl"
    done = _torchrun(setup, out, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    # each rank answered exactly the items it owns by hash, and nothing else
    assert _answered(done.stderr) == {0: PER_RANK, 1: PER_RANK}
    assert f"merged the part files: {2 * PER_RANK} records in {out}" in done.stderr.replace("\n", " ")
    merged = read_jsonl(out)
    assert [r["id"] for r in merged] == setup["order"]  # input order, each id once
    assert all(r["error"] is None for r in merged)
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]  # --json: each rank's
    assert sorted(r["id"] for r in printed) == sorted(setup["order"])
    assert _answers(merged) == _answers(setup["reference"])  # greedy: the same answers as one process
    assert part_files(out) == [] and not list(tmp_path.glob("*.part-*"))  # part files and their locks removed


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_pid(agent: int, rank: int, deadline: float) -> int:
    """The pid of torchrun's worker with RANK=rank (from its environment)."""
    while time.time() < deadline:
        for child in _children(agent):
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return child
        time.sleep(0.05)
    raise AssertionError(f"no worker with RANK={rank} appeared")


def test_one_rank_killed_then_a_rerun_with_one_rank_completes_without_asking_twice(setup, tmp_path):
    out = tmp_path / "answers.jsonl"
    proc = subprocess.Popen(
        _command(setup, out, 2),
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        victim = _rank_pid(proc.pid, 1, deadline)
        part = part_path(out, Shard(rank=1, world=2))
        while not (part.exists() and part.read_bytes().count(b"\n") >= 1):  # its first answer is written
            assert proc.poll() is None and time.time() < deadline, "rank 1 wrote nothing"
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        stderr = proc.communicate(timeout=120)[1].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0, stderr[-2000:]
    assert not out.exists()  # nothing merged: the run did not finish
    killed = read_jsonl(part)
    assert 1 <= len(killed) < PER_RANK, "rank 1 finished before it could be killed"
    before = [r for p in part_files(out) for r in read_jsonl(p)]
    assert len({r["id"] for r in before}) == len(before) < 2 * PER_RANK

    done = _torchrun(setup, out, 1)  # another world size: one rank owns everything now
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr.replace("\n", " ")
    assert f"answered {2 * PER_RANK - len(before)}, failed 0, skipped {len(before)} already in" in err
    merged = read_jsonl(out)
    assert [r["id"] for r in merged] == setup["order"]  # complete, in input order, no duplicates
    assert _answers(merged) == _answers(setup["reference"])
    by_id = {r["id"]: r for r in merged}
    assert all(by_id[r["id"]] == r for r in before)  # what the killed run wrote is kept as it was
    assert part_files(out) == []


def test_plain_run_resumes_leftover_parts_of_any_world_size_and_merges(setup, tmp_path, monkeypatch):
    """No launcher: part files left by a 3-rank and a 2-rank run (one record torn mid-write, one
    error superseded by a later answer) are read as answered; only the rest is asked, then all merge."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "answers.jsonl"
    reference = setup["reference"]
    by_id = {r["id"]: r for r in reference}
    order = setup["order"]
    old3 = part_path(out, Shard(rank=2, world=3))
    old3.write_text(
        "".join(json.dumps(by_id[i]) + "\n" for i in order[:2])
        + json.dumps({**by_id[order[2]], "answer": None, "error": "generation failed: test"})
        + "\n"
    )
    old2 = part_path(out, Shard(rank=0, world=2))
    old2.write_text(json.dumps(by_id[order[2]]) + "\n" + json.dumps(by_id[order[3]])[:25])  # torn last line
    summary = run(_config(setup["root"], setup["audio"], out, launcher=True), model=setup["model"])
    assert (summary["skipped_done"], summary["answered"], summary["merged"]) == (3, len(order) - 3, len(order))
    merged = read_jsonl(out)
    assert [r["id"] for r in merged] == order
    assert _answers(merged) == _answers(reference)
    assert merged[2] == by_id[order[2]]  # the answer, not the earlier error record
    assert part_files(out) == []


def test_owners_are_stable_and_disjoint_and_merge_keeps_other_records(tmp_path):
    ids = [f"id{n}" for n in range(200)]
    for world in (1, 2, 3, 8):
        shares = [[i for i in ids if owner(i, world) == r] for r in range(world)]
        assert sorted(sum(shares, [])) == sorted(ids)  # every id owned by exactly one rank
        assert all(shares) or world > len(ids)
    assert [owner(i, 4) for i in ids] == [owner(i, 4) for i in ids]  # no per-process salt (unlike hash())
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps({"id": "older", "answer": "kept", "error": None}) + "\n")
    part_path(out, Shard(rank=1, world=2)).write_text(json.dumps({"id": "b", "answer": "B", "error": None}) + "\n")
    part_path(out, Shard(rank=0, world=2)).write_text(json.dumps({"id": "a", "answer": "A", "error": None}) + "\n")
    assert merge(out, ["a", "b"]) == 3
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b", "older"]
    assert part_files(out) == []


def test_a_sharded_run_says_what_is_wrong_in_one_line(setup, tmp_path, monkeypatch):
    """Several ranks without -o; an -o that is a folder; a second job on an output another one holds."""
    from musilingo_cli.core.errors import ConfigError
    from musilingo_cli.core.journal import hold_lock

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="several ranks need an output file"):
        run(_config(setup["root"], setup["audio"], None, launcher=True), model=setup["model"])
    monkeypatch.setenv("WORLD_SIZE", "1")
    part_path(tmp_path / "folder", Shard(rank=0, world=2)).write_text("")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="it is a folder"):
        run(_config(setup["root"], setup["audio"], tmp_path / "folder", launcher=True), model=setup["model"])
    out = tmp_path / "answers.jsonl"
    part_path(out, Shard(rank=1, world=2)).write_text(json.dumps(setup["reference"][0]) + "\n")
    held = hold_lock(out)  # another job writing this output
    try:
        with pytest.raises(ConfigError, match="another process is writing"):
            run(_config(setup["root"], setup["audio"], out, launcher=True), model=setup["model"])
    finally:
        held.release()
    assert len(read_jsonl(part_path(out, Shard(rank=1, world=2)))) == 1 and not out.exists()  # untouched
