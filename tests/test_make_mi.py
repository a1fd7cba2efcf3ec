"""make-mi end to end: the real `openai` client over HTTP against tests/chat_server.py, the CLI
run as a subprocess (as users run it), outputs read back from disk."""

import json
import os
import signal
import time
from collections import Counter

from chat_server import NEGATIVE_MARKER, ChatServer, Faults
from make_mi_helpers import excerpt_captions, fast_args, run_cli, start_cli, write_excerpt

from musilingo_cli.core.journal import read_jsonl

SECRET = "sk-test-secret-value"  # what make_mi_helpers puts in OPENAI_API_KEY


def _requests_expected(out):
    """One generation per unit, plus one filter per unit with pairs left after the rules."""
    journal = read_jsonl(out / "journal.jsonl")
    return sum(r["type"] == "generated" for r in journal) + sum(
        r["type"] == "filtered" and r["attempts"] > 0 for r in journal
    )


def _load(out, name):
    return json.loads((out / name).read_text())


def _check_complete(out, captions):
    """Every caption has both kinds done, the split files partition the main ones, no duplicates."""
    summary = _load(out, "summary.json")
    assert summary["units_done"] == 2 * len(captions) and summary["units_failed"] == 0
    filtered = Counter((r["id"], r["kind"]) for r in read_jsonl(out / "journal.jsonl") if r["type"] == "filtered")
    assert set(filtered) == {(c, k) for c in captions for k in ("short", "long")} and set(filtered.values()) == {1}
    for kind in ("short", "long"):
        qa = _load(out, f"music_instruct_{kind}.json")["QA"]
        assert {item["ytid"] for item in qa} <= set(captions) and len({item["ytid"] for item in qa}) > len(
            captions
        ) // 2
        keys = [(item["ytid"], item["pair_index"]) for item in qa]
        assert len(keys) == len(set(keys))
        for item in qa:
            assert (
                item["kind"] == kind
                and item["caption"] == captions[item["ytid"]]
                and item["question"]
                and item["answer"]
            )
            assert len(item["prompt_sha256"]) == 64 and item["model"] == "local-test"
        train = _load(out, f"music_instruct_{kind}_train.json")["QA"]
        test = _load(out, f"music_instruct_{kind}_test.json")["QA"]
        assert all(not i["is_audioset_eval"] for i in train) and all(i["is_audioset_eval"] for i in test)
        assert len(train) + len(test) == len(qa)
    return summary


def test_clean_run_over_musiccaps_excerpt(tmp_path):
    captions = excerpt_captions()
    with ChatServer() as server:
        result = run_cli(
            fast_args(
                server.base_url, tmp_path / "out", "--captions", str(write_excerpt(tmp_path)), "--concurrency", "4"
            )
        )
        assert result.returncode == 0, result.stderr
        served = server.served()
    out = tmp_path / "out"
    summary = _check_complete(out, captions)
    # one generation and one filter request per (caption, kind), none repeated
    per_request = Counter((e["kind"], e["caption"], e["request"]) for e in server.log)
    assert set(per_request.values()) == {1} and len(per_request) == _requests_expected(out)
    assert _requests_expected(out) > 3 * len(captions)
    assert sum(served.values()) == len(server.log)
    # the official schema's fields, from real MusicCaps rows
    first = _load(out, "music_instruct_short.json")["QA"][0]
    assert {"question", "answer", "ytid", "is_audioset_eval", "caption", "kind"} <= set(first)
    assert summary["tokens"]["prompt_tokens"] > 0 and "pairs generated" in result.stdout
    # the key is never printed or written
    everything = result.stdout + result.stderr + "".join(p.read_text() for p in out.iterdir())
    assert SECRET not in everything


def test_filter_drops_exactly_the_pairs_the_server_judges_negative(tmp_path):
    with ChatServer() as server:
        result = run_cli(
            fast_args(server.base_url, tmp_path / "out", "--captions", str(write_excerpt(tmp_path)), "--kind", "short")
        )
        assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    journal = read_jsonl(out / "journal.jsonl")
    rules = {(r["id"], x["index"]) for r in journal if r["type"] == "filtered" for x in r["rules"]}
    generated = [(g["id"], i, p) for g in journal if g["type"] == "generated" for i, p in enumerate(g["pairs"])]
    negative = {(cid, i) for cid, i, p in generated if NEGATIVE_MARKER in p["answer"] and (cid, i) not in rules}
    positive = {(cid, i) for cid, i, p in generated if NEGATIVE_MARKER not in p["answer"] and (cid, i) not in rules}
    assert negative and rules  # the excerpt exercises both
    rejects = read_jsonl(out / "rejects.jsonl")
    dropped = {
        (
            r["ytid"],
            next(
                i
                for c, i, p in generated
                if c == r["ytid"] and p["question"] == r["question"] and p["answer"] == r["answer"]
            ),
        )
        for r in rejects
        if r["reason"] == "filter_negative"
    }
    assert dropped == negative
    kept = {(i["ytid"], i["pair_index"]) for i in _load(out, "music_instruct_short.json")["QA"]}
    assert kept == positive
    assert {r["reason"] for r in rejects} == {"filter_negative", "duplicate_question"}
    summary = _load(out, "summary.json")
    assert summary["rejected_by_reason"]["filter_negative"] == len(negative)
    assert summary["pairs_generated"] == len(generated) == len(kept) + summary["pairs_rejected"]


def test_ten_percent_faults_end_complete(tmp_path):
    captions = excerpt_captions()
    with ChatServer(Faults.spread(0.10, hang_s=1.5), seed=7) as server:
        result = run_cli(
            fast_args(
                server.base_url, tmp_path / "out", "--captions", str(write_excerpt(tmp_path)), "--concurrency", "8"
            )
        )
        assert result.returncode == 0, result.stderr
    _check_complete(tmp_path / "out", captions)
    outcomes = Counter(e["outcome"] for e in server.log)
    assert sum(v for k, v in outcomes.items() if k != "ok") > 0
    # a fault is retried, a success is never repeated
    assert set(server.served().values()) == {1}


def test_each_fault_is_retried_and_retry_after_is_honoured(tmp_path):
    script = ("rate_limit", "server_error", "hang", "bad_body", "not_json")
    with ChatServer(Faults(script=script, retry_after="0.4", hang_s=1.5)) as server:
        result = run_cli(
            fast_args(
                server.base_url,
                tmp_path / "out",
                "--captions",
                str(write_excerpt(tmp_path, rows=1)),
                "--kind",
                "short",
                "--concurrency",
                "1",
            )
        )
        assert result.returncode == 0, result.stderr
    outcomes = [e["outcome"] for e in server.log]
    assert outcomes == ["http_429", "http_500", "hang", "bad_body", "not_json", "ok", "ok"]
    # backoff jitter is at most --retry-base 0.01 here, so a gap of 0.4 s comes from Retry-After
    assert server.log[1]["t"] - server.log[0]["t"] >= 0.4
    assert _load(tmp_path / "out", "summary.json")["units_done"] == 1


def test_exhausted_retries_record_failure_and_rerun_retries_only_those(tmp_path):
    captions = excerpt_captions()
    bad = captions["-0SdAVK79lg"]
    csv = str(write_excerpt(tmp_path, rows=6))
    out = tmp_path / "out"
    with ChatServer(fail_captions={bad}) as server:
        result = run_cli(fast_args(server.base_url, out, "--captions", csv, "--max-retries", "2"))
        assert result.returncode == 0, result.stderr
        assert "rerun the same command to retry" in result.stderr
        assert Counter(e["caption"] for e in server.log)[bad] == 2 * 3  # 2 kinds x (1 + 2 retries)
        summary = _load(out, "summary.json")
        assert summary["units_failed"] == 2 and {f["ytid"] for f in summary["failed"]} == {"-0SdAVK79lg"}
        assert {f["reason"] for f in summary["failed"]} == {"http_500"}
        server.fail_captions.clear()
        skip = run_cli(fast_args(server.base_url, out, "--captions", csv, "--no-retry-failed"))
        assert skip.returncode == 0 and len(server.log) == 6 * 4 - 4 + 6
        again = run_cli(fast_args(server.base_url, out, "--captions", csv))
        assert again.returncode == 0, again.stderr
        assert set(server.served().values()) == {1}  # earlier successes were not requested again
    summary = _load(out, "summary.json")
    assert summary["units_failed"] == 0 and summary["units_done"] == 12


def test_unparseable_replies_fail_with_reason(tmp_path):
    with ChatServer(Faults(not_json=1.0)) as server:
        result = run_cli(
            fast_args(
                server.base_url,
                tmp_path / "out",
                "--captions",
                str(write_excerpt(tmp_path, rows=2)),
                "--kind",
                "long",
                "--max-retries",
                "1",
            )
        )
        assert result.returncode == 1 and "every caption failed" in result.stderr  # nothing usable: not a success
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert [r["reason"] for r in rejects] == ["failed_generate:unparseable"] * 2


def test_killed_run_resumes_with_every_request_served_once(tmp_path):
    captions = excerpt_captions()
    out = tmp_path / "out"
    args = fast_args("", out, "--captions", str(write_excerpt(tmp_path)), "--concurrency", "4")
    with ChatServer(latency=0.02, hold_at_filter=15) as server:
        args[2] = server.base_url
        proc = start_cli(args)
        # The server holds every request from the 15th filter on; once the ones already being
        # answered are journaled, nothing is in flight that was billed: kill -9 there.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            journaled = [r for r in read_jsonl(out / "journal.jsonl") if r["type"] != "failed" and r["attempts"] > 0]
            if server._held.is_set() and server.active == 0 and len(journaled) == sum(server.served().values()):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the run never reached the hold point")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        at_kill = read_jsonl(out / "journal.jsonl")
        generated = {(r["id"], r["kind"]) for r in at_kill if r["type"] == "generated"}
        filtered = {(r["id"], r["kind"]) for r in at_kill if r["type"] == "filtered"}
        assert generated - filtered  # some units died between generation and filter
        assert len(filtered) < 2 * len(captions)
        server.hold_at_filter = None
        server.release()
        result = run_cli(args)
        assert result.returncode == 0, result.stderr
        served = server.served()
    assert set(served.values()) == {1} and len(served) == _requests_expected(out)
    _check_complete(out, captions)
    journal = read_jsonl(out / "journal.jsonl")
    assert len([r for r in journal if r["type"] == "generated"]) == 2 * len(captions)


def test_outputs_rebuild_from_the_journal_without_requests(tmp_path):
    out = tmp_path / "out"
    csv = str(write_excerpt(tmp_path, rows=4))
    with ChatServer() as server:
        assert run_cli(fast_args(server.base_url, out, "--captions", csv)).returncode == 0
        before = (out / "music_instruct_long.json").read_text()
        (out / "music_instruct_long.json").unlink()
        requests = len(server.log)
        assert run_cli(fast_args(server.base_url, out, "--captions", csv)).returncode == 0
        assert len(server.log) == requests
    assert (out / "music_instruct_long.json").read_text() == before


def test_refused_key_fails_fast_without_showing_it(tmp_path):
    with ChatServer(status_for_all=401) as server:
        result = run_cli(
            fast_args(server.base_url, tmp_path / "out", "--captions", str(write_excerpt(tmp_path, rows=5)))
        )
        assert result.returncode == 1
        assert len(server.log) <= 4  # no retries: at most the requests already in flight
    assert "HTTP 401" in result.stderr and "OPENAI_API_KEY" in result.stderr and server.base_url in result.stderr
    assert SECRET not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_key_file_is_sent_and_never_shown(tmp_path):
    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-from-a-key-file\n")
    with ChatServer() as server:
        result = run_cli(
            fast_args(
                server.base_url,
                tmp_path / "out",
                "--captions",
                str(write_excerpt(tmp_path, rows=2)),
                "--kind",
                "short",
                "--api-key-file",
                str(key_file),
            )
        )
        assert result.returncode == 0, result.stderr
        assert {e["authorization"] for e in server.log} == {"Bearer sk-from-a-key-file"}  # the file wins over the env
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "sk-from-a-key-file" not in result.stdout + result.stderr + written


def test_server_without_json_mode_gets_plain_requests(tmp_path):
    with ChatServer(reject_json_mode=True) as server:
        result = run_cli(
            fast_args(
                server.base_url,
                tmp_path / "out",
                "--captions",
                str(write_excerpt(tmp_path, rows=3)),
                "--concurrency",
                "1",
            )
        )
        assert result.returncode == 0, result.stderr
    assert server.log[0]["outcome"] == "http_400" and server.log[0]["json_mode"]
    assert all(not e["json_mode"] and e["outcome"] == "ok" for e in server.log[1:])
    assert _load(tmp_path / "out", "summary.json")["units_done"] == 6


def test_dry_run_sends_nothing_and_estimates_cost(tmp_path):
    with ChatServer() as server:
        args = [
            "make-mi",
            "--captions",
            str(write_excerpt(tmp_path)),
            "--out",
            str(tmp_path / "out"),
            "--base-url",
            server.base_url,
            "--model",
            "gpt-4o-mini",
            "--dry-run",
        ]
        result = run_cli(args)
        assert result.returncode == 0, result.stderr
        assert server.log == []
    assert "The low quality recording features a ballad song" in result.stdout
    assert "Example questions" in result.stdout and "nothing was sent" in result.stdout
    assert "cost $" in result.stdout and not (tmp_path / "out").exists()
    as_json = json.loads(run_cli(args + ["--json"]).stdout)
    assert as_json["requests"] == 120 and as_json["estimated_cost_usd"] > 0
