"""`musilingo serve` in a subprocess on 127.0.0.1 (a free port) with a tiny checkpoint, for the
serve, web and benchmark code: `start_server(...)` returns a handle with `.url` and `.stop()`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from model_helpers import build_model

REPO = Path(__file__).resolve().parents[1]


def tiny_checkpoint(root: Path) -> Path:
    """A tiny MusiLingo saved as one of our checkpoints under `root` (built once)."""
    from musilingo_cli.model.checkpoint import save_checkpoint

    ckpt = Path(root) / "ckpt"
    if not (ckpt / "musilingo.json").exists():
        model = build_model(root)
        save_checkpoint(ckpt, model.config, model.trainable_state())
    return ckpt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "w") if log else subprocess.DEVNULL
        command = [sys.executable, "-m", "musilingo_cli", "serve", "--port", str(self.port), "--device", "cpu", *args]
        self.proc = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 180.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log()}")
            try:
                self.health()
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not come up in {timeout:.0f} s: {self.log()}")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as reply:
            return json.loads(reply.read())

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def start_server(ckpt: Path, *extra: str, env: dict[str, str] | None = None, log: Path | None = None) -> ServerProcess:
    """A running server for `ckpt` (greedy by default, short answers)."""
    args = ["--model", str(ckpt), "--preset", "greedy", "--max-new-tokens", "16", *extra]
    return ServerProcess(args, env=env, log=log).wait_ready()
