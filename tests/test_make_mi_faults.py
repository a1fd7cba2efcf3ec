"""make-mi under the faults of real servers and real users (issue 12, items 1-7): replies cut at an
output limit, long Retry-After waits, content retries that must differ, braces in captions, two runs
on one output folder, billed-but-unjournaled requests, secrets in URLs, bad options. The real
`openai` client over HTTP against tests/chat_server.py; the CLI as a subprocess."""

import json
import os
import re
import signal
import socket
import time

import pytest
from chat_server import ChatServer, Faults, caption_of
from make_mi_helpers import fast_args, run_cli, start_cli, write_excerpt

from musilingo_cli.core.console import stderr as console_stderr
from musilingo_cli.core.errors import ConfigError
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.pipelines.chat_api import ChatClient, ChatSettings, redact_url
from musilingo_cli.pipelines.make_mi import MakeMIConfig
from musilingo_cli.pipelines.make_mi.config import check_config


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _one_row(tmp_path, *extra):
    return ("--captions", str(write_excerpt(tmp_path, rows=1)), "--kind", "short", "--concurrency", "1", *extra)


def test_reply_cut_at_server_limit_is_named_and_retried_once_with_twice_the_budget(tmp_path):
    out = tmp_path / "out"
    with ChatServer(num_predict=10) as server:  # like Ollama num_predict=10: every reply cut
        result = run_cli(fast_args(server.base_url, out, *_one_row(tmp_path, "--max-output-tokens", "300")))
        assert result.returncode == 1 and "every caption failed" in result.stderr, result.stderr  # the only one
    # 2 requests, not 1 + max-retries: the first with the budget, the second with twice it
    assert [e["body"]["max_tokens"] for e in server.log] == [300, 600]
    assert [e["outcome"] for e in server.log] == ["cut", "cut"]
    failed = _summary(out)["failed"]
    assert [(f["stage"], f["reason"]) for f in failed] == [("generate", "truncated")]
    detail = read_jsonl(out / "rejects.jsonl")[0]["detail"]
    assert "finish_reason 'length'" in detail and "max_tokens 300 and then 600" in detail and "num_predict" in detail


def test_reply_cut_once_succeeds_on_the_larger_budget_and_is_recorded(tmp_path):
    out = tmp_path / "out"
    with ChatServer(cut_first=1) as server:
        result = run_cli(fast_args(server.base_url, out, *_one_row(tmp_path)))
        assert result.returncode == 0, result.stderr
    assert [(e["kind"], e["body"]["max_tokens"], e["outcome"]) for e in server.log] == [
        ("generate", 2048, "cut"),
        ("generate", 4096, "ok"),
        ("filter", 2048, "ok"),
    ]
    generated = next(r for r in read_jsonl(out / "journal.jsonl") if r["type"] == "generated")
    assert generated["attempts"] == 2
    assert generated["retries"] == [{"after": "truncated", "seed": 0, "max_tokens": 4096, "note": False}]
    assert _summary(out)["units_done"] == 1


def test_retry_after_beyond_the_cap_fails_the_unit_naming_the_wait(tmp_path):
    out = tmp_path / "out"
    with ChatServer(Faults(rate_limit=1.0, retry_after="90")) as server:
        result = run_cli(fast_args(server.base_url, out, *_one_row(tmp_path, "--max-retry-after", "5")))
        assert result.returncode == 1 and "every caption failed" in result.stderr, result.stderr  # the only one
    assert [e["outcome"] for e in server.log] == ["http_429"]  # not retried early by anyone
    failed = _summary(out)["failed"]
    assert [f["reason"] for f in failed] == ["retry_after_too_long"]
    detail = read_jsonl(out / "rejects.jsonl")[0]["detail"]
    assert "wait 90 s" in detail and "--max-retry-after 5 s" in detail


def test_retry_after_within_the_cap_is_waited_in_full(tmp_path):
    out = tmp_path / "out"
    with ChatServer(Faults(script=("rate_limit", "rate_limit"), retry_after="0.3")) as server:
        result = run_cli(fast_args(server.base_url, out, *_one_row(tmp_path, "--max-retry-after", "1")))
        assert result.returncode == 0, result.stderr
    assert [e["outcome"] for e in server.log] == ["http_429", "http_429", "ok", "ok"]
    # --retry-base 0.01 bounds our own jitter, so these gaps come from Retry-After alone
    assert server.log[1]["t"] - server.log[0]["t"] >= 0.3 and server.log[2]["t"] - server.log[1]["t"] >= 0.3


def test_content_retry_changes_seed_and_adds_a_note(tmp_path):
    out = tmp_path / "out"
    with ChatServer(Faults(script=("not_json",))) as server:
        result = run_cli(fast_args(server.base_url, out, *_one_row(tmp_path, "--seed", "7")))
        assert result.returncode == 0, result.stderr
    first, second = server.log[0]["body"], server.log[1]["body"]
    assert (first["seed"], second["seed"]) == (7, 8)
    assert second["messages"][:2] == first["messages"] and len(second["messages"]) == 3
    assert "could not be used (unparseable" in second["messages"][2]["content"]
    generated = next(r for r in read_jsonl(out / "journal.jsonl") if r["type"] == "generated")
    assert generated["retries"] == [{"after": "unparseable", "seed": 8, "max_tokens": 2048, "note": True}]


def test_transport_faults_are_retried_by_the_openai_client(tmp_path):
    with ChatServer(Faults(script=("server_error", "server_error"))) as server:
        result = run_cli(fast_args(server.base_url, tmp_path / "out", *_one_row(tmp_path)))
        assert result.returncode == 0, result.stderr
    # the client's own retry header counts 0, 1, 2 within one call: no second loop on top
    assert [(e["outcome"], e["retry_count"]) for e in server.log[:3]] == [
        ("http_500", "0"),
        ("http_500", "1"),
        ("ok", "2"),
    ]
    generated = next(r for r in read_jsonl(tmp_path / "out" / "journal.jsonl") if r["type"] == "generated")
    assert generated["attempts"] == 3 and generated["retries"] == []


def test_braces_in_captions_and_answers_reach_the_server_unchanged(tmp_path):
    caption = "A slow riff in {n}/4 time, with {pairs} of drums and a {tempo} marking."
    path = tmp_path / "caps.csv"
    path.write_text(f'ytid,caption,is_audioset_eval\nb1,"{caption}",False\n')
    with ChatServer() as server:
        result = run_cli(fast_args(server.base_url, tmp_path / "out", "--captions", str(path), "--kind", "short"))
        assert result.returncode == 0, result.stderr
    assert [(e["kind"], e["caption"]) for e in server.log] == [("generate", caption), ("filter", caption)]
    sent_pairs = server.log[1]["body"]["messages"][1]["content"]
    assert sent_pairs.count(json.dumps(caption)[1:-1]) >= 2  # the caption, and answers quoting it
    kept = json.loads((tmp_path / "out" / "music_instruct_short.json").read_text())["QA"]
    assert kept and all(item["answer"] == caption for item in kept)


def test_second_run_on_one_output_is_refused_in_one_line(tmp_path):
    out = tmp_path / "out"
    args = fast_args("", out, "--captions", str(write_excerpt(tmp_path, rows=3)))
    with ChatServer(hold_at_request=1) as server:
        args[2] = server.base_url
        first = start_cli(args + ["--timeout", "60"])  # its held requests wait, not retry
        try:
            deadline = time.monotonic() + 30
            while not server._held.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server._held.is_set(), "the first run sent nothing"
            time.sleep(0.5)  # let the first run's other workers send their (held) requests
            sent = len(server.log)
            second = run_cli(args)
            assert second.returncode == 1
            assert second.stderr.strip().count("\n") == 0
            assert f"another make-mi run is writing to {out}" in second.stderr and "Traceback" not in second.stderr
            assert len(server.log) == sent  # the second run sent nothing
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate()
        server.hold_at_request = None
        server.release()
        # the lock died with the first run: a third run may go
        third = run_cli(args)
        assert third.returncode == 0, third.stderr


def test_tokens_billed_before_a_kill_count_in_the_summary(tmp_path):
    out = tmp_path / "out"
    args = fast_args("", out, *_one_row(tmp_path, "--timeout", "60"))  # the held request waits, not retries
    # the first reply is unusable (billed); its retry is held, and the run is killed there
    with ChatServer(Faults(script=("not_json",)), hold_at_request=2) as server:
        args[2] = server.base_url
        proc = start_cli(args)
        deadline = time.monotonic() + 30
        while not (server._held.is_set() and len(server.log) == 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert [r for r in read_jsonl(out / "journal.jsonl")] == []  # nothing journaled: the unit never ended
        server.hold_at_request = None
        server.release()
        result = run_cli(args)
        assert result.returncode == 0, result.stderr
        billed = server.billed_tokens()
    summary = _summary(out)
    assert summary["tokens"] == billed  # the unusable reply of the killed run is counted
    journal_tokens = sum(r["usage"]["prompt_tokens"] for r in read_jsonl(out / "journal.jsonl"))
    assert summary["tokens"]["prompt_tokens"] > journal_tokens
    assert summary["requests_without_usage"] == 1 and summary["cost_is_lower_bound"] is True
    assert "cost is a lower bound" in result.stderr


def test_secret_in_base_url_is_never_shown(tmp_path):
    with ChatServer(status_for_all=401) as server:
        url = server.base_url.replace("http://", "http://alice:hunter2@")
        result = run_cli(fast_args(url, tmp_path / "out", *_one_row(tmp_path)))
    assert result.returncode == 1 and "hunter2" not in result.stdout + result.stderr
    assert "http://***@127.0.0.1" in result.stderr and "HTTP 401" in result.stderr
    assert "check $OPENAI_API_KEY" in result.stderr
    assert redact_url("https://u:p@h.example/v1?api_key=s3cret&x=1") == "https://***@h.example/v1?api_key=***&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_401_hint_names_the_key_file_and_a_readable_key_file_is_warned(tmp_path):
    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-from-a-key-file\n")
    key_file.chmod(0o644)
    with ChatServer(status_for_all=401) as server:
        result = run_cli(
            fast_args(server.base_url, tmp_path / "out", *_one_row(tmp_path, "--api-key-file", str(key_file)))
        )
    assert result.returncode == 1
    assert f"check the key in --api-key-file {key_file}" in result.stderr
    assert f"--api-key-file {key_file} is readable by other users (mode 644); run: chmod 600" in result.stderr
    key_file.chmod(0o600)
    with ChatServer() as server:
        result = run_cli(
            fast_args(server.base_url, tmp_path / "out2", *_one_row(tmp_path, "--api-key-file", str(key_file)))
        )
    assert result.returncode == 0 and "readable by other users" not in result.stderr
    assert "sk-from-a-key-file" not in result.stdout + result.stderr


def test_key_over_plain_http_to_a_remote_host_warns_once():
    with console_stderr.capture() as captured:
        # nothing is sent: the warning comes when the client is made, once per run
        remote = ChatClient(ChatSettings(model="m", base_url="http://192.0.2.7:8000/v1", api_key="sk-x"))
        local = ChatClient(ChatSettings(model="m", base_url="http://127.0.0.1:8000/v1", api_key="sk-x"))
        secure = ChatClient(ChatSettings(model="m", base_url="https://192.0.2.7/v1", api_key="sk-x"))
    for client in (remote, local, secure):
        client.close()
    text = captured.get()
    assert text.count("sent unencrypted over plain http to http://192.0.2.7:8000/v1") == 1
    assert "sk-x" not in text and text.count("warning:") == 1


def test_client_closes_its_connection_pool():
    with ChatClient(ChatSettings(model="m", base_url="http://127.0.0.1:9/v1")) as client:
        assert not client._client.is_closed()
    assert client._client.is_closed()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("timeout", -1.0, "--timeout must be more than 0 seconds, not -1"),
        ("requests_per_minute", -5.0, "--requests-per-minute must be 0 (no limit) or more, not -5"),
        ("base_url", "127.0.0.1:8000/v1", "--base-url must be an http:// or https:// URL"),
        ("base_url", "ftp://u:pw@host/v1", "got 'ftp://***@host/v1'"),
        ("max_retry_after", -1.0, "--max-retry-after must be 0 or more"),
        ("max_output_tokens", 0, "--max-output-tokens must be at least 1"),
    ],
)
def test_bad_options_are_one_line_usage_errors(flag, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(MakeMIConfig(captions="x", **{flag: value}))


def test_bad_option_from_the_cli_exits_2_before_reading_anything(tmp_path):
    result = run_cli(["make-mi", "--captions", str(tmp_path / "missing.csv"), "--base-url", "localhost:8000/v1"])
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "--base-url must be an http:// or https:// URL" in result.stderr


def test_library_call_sends_its_budget_and_reads_the_reply():
    messages = [{"role": "user", "content": "<caption>Soft piano.</caption> Write 1 question-answer pairs"}]
    with ChatServer() as server, ChatClient(ChatSettings(model="m", base_url=server.base_url, max_tokens=50)) as client:
        reply = client.chat_json(messages)
    assert reply.data["pairs"][0]["answer"] == "Soft piano." and reply.attempts == 1
    assert server.log[0]["body"]["max_tokens"] == 50 and caption_of(server.log[0]["body"]["messages"]) == "Soft piano."


def test_secret_in_base_url_is_redacted_in_recorded_failures(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://alice:hunter2@127.0.0.1:{port}/v1"
    out = tmp_path / "out"
    result = run_cli(fast_args(url, out, *_one_row(tmp_path, "--max-retries", "0")))
    # make-mi reaches the server once before it starts: one line, the URL redacted, nothing sent or billed
    assert result.returncode != 0, result.stderr
    written = "".join(p.read_text() for p in out.iterdir() if p.is_file()) if out.is_dir() else ""
    assert "hunter2" not in result.stdout + result.stderr + written
    assert f"http://***@127.0.0.1:{port}/v1" in result.stderr, result.stderr
