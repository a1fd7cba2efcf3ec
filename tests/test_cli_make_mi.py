"""make-mi through the installed console script when it cannot work: no key for the default
OpenAI API, a server that is not there, a server that fails every request. Each stops with one
line and a non-zero exit; the first two before any request is sent and before any MI file."""

from __future__ import annotations

from chat_server import ChatServer
from make_mi_helpers import write_excerpt
from test_cli_script import musilingo
from train_helpers import free_port


def _env(**extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "COLUMNS": "400", **extra}


def _error_line(done) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_no_key_for_the_default_api_stops_before_any_request(tmp_path):
    done = musilingo(
        "make-mi", "--captions", str(write_excerpt(tmp_path, rows=3)), "-o", str(tmp_path / "mi"), env=_env()
    )
    assert done.returncode == 1
    line = _error_line(done)
    assert "no API key" in line and "OPENAI_API_KEY" in line and "--api-key-file" in line
    assert not list((tmp_path / "mi").glob("music_instruct_*.json"))


def test_a_server_that_is_not_there_stops_before_any_request(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    done = musilingo(
        "make-mi",
        "--captions",
        str(write_excerpt(tmp_path, rows=3)),
        "-o",
        str(tmp_path / "mi"),
        "--base-url",
        url,
        env=_env(OPENAI_API_KEY="sk-test"),
    )
    assert done.returncode == 1
    assert f"cannot reach {url}" in _error_line(done)
    assert not list((tmp_path / "mi").glob("music_instruct_*.json"))


def test_a_run_where_every_caption_failed_exits_non_zero(tmp_path):
    with ChatServer(status_for_all=500) as server:
        done = musilingo(
            "make-mi",
            "--captions",
            str(write_excerpt(tmp_path, rows=2)),
            "-o",
            str(tmp_path / "mi"),
            "--base-url",
            server.base_url,
            "--kind",
            "short",
            "--max-retries",
            "0",
            "--timeout",
            "2",
            "--retry-base",
            "0.01",
            "--requests-per-minute",
            "0",
            env=_env(OPENAI_API_KEY="sk-test"),
        )
        assert server.log, "the requests reached the server"
    assert done.returncode == 1, done.stderr
    line = _error_line(done)
    assert "every caption failed (2 caption x kind)" in line and "summary.json" in line
