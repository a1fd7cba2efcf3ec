"""`musilingo serve`: an OpenAI-compatible chat server with continuous batching and a web demo.

    app.py        FastAPI routes: /v1/chat/completions, /v1/models, /health, the page at /
    protocol.py   the OpenAI request/response/error shapes and audio parts
    workers.py    encoder threads, the relay of decoding events to the loop, audio decoding
    static/       the web demo (one HTML page, no external scripts)

The decoding itself is model.live_batch.Engine; prompts are pipelines.chat's (docs/serve.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from musilingo_cli.core.console import stderr
from musilingo_cli.core.errors import ConfigError

API_KEY_ENV = "MUSILINGO_API_KEY"


@dataclass
class ServeConfig:
    """Everything `musilingo serve` needs; defaults are the command line's.

    Attributes:
        model / encoder / llm / device / dtype / encoder_dtype: as `ask`.
        host / port: where to listen (127.0.0.1 by default: only this machine).
        preset / max_new_tokens: decoding when a request does not say (temperature 0 = greedy).
        max_batch: requests decoded together; max_waiting: requests queued beyond them (then 503).
        template: "default" (stage-2, as ask) or "demo" (the official demo's conversation).
        max_audio_seconds / max_body_bytes: larger requests get 413.
        chunk_seconds: long audio is encoded in chunks of this length (as ask).
        allowed_local_media_path: `file://` audio URLs below it are read; None = refused.
        api_key: bearer token required on /v1 (from MUSILINGO_API_KEY or --api-key-file only).
        served_model_name: the model id /v1/models lists.
        encoder_threads: threads encoding audio; None = 2 on a CPU device (a burst's clips are encoded on
            two cores while decoding goes on), 1 on an accelerator.
        cpu_threads: torch's intra-op threads on a CPU device; None = the cores shared out over the encoder
            threads and the decoding thread (see split_cpu_threads).
        hold_seconds: on a CPU device, how long the decoding loop may hold its rows (no step) while
            requests are still being decoded or encoded, at a time (model.live_batch.Engine); 0 = never.
    """

    model: str | None = None
    encoder: str | None = None
    llm: str | None = None
    device: str | None = None
    dtype: str | None = None
    encoder_dtype: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    preset: str = "official"
    max_new_tokens: int = 300
    max_batch: int | None = None
    max_waiting: int = 256
    template: str = "default"
    max_audio_seconds: float = 600.0
    max_body_bytes: int = 64 * 1024 * 1024
    chunk_seconds: float = 30.0
    encoder_batch_size: int = 8
    workers: int = 4
    allowed_local_media_path: str | None = None
    api_key: str | None = None
    served_model_name: str = "musilingo"
    encoder_threads: int | None = None
    cpu_threads: int | None = None
    hold_seconds: float = 0.25


def read_api_key(key_file: Path | None) -> str | None:
    """The key from --api-key-file, else MUSILINGO_API_KEY, else None (no auth). Never printed."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as err:
            raise ConfigError(f"--api-key-file {key_file}: cannot be read ({err.strerror})") from None
        if not key:
            raise ConfigError(f"--api-key-file {key_file} is empty")
        return key
    key = os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():  # e.g. a failed $(cat key): refusing beats serving without a key
        raise ConfigError(f"{API_KEY_ENV} is set but empty: give it a key, or unset it to serve without one")
    return key or None


def build(config: ServeConfig, model=None):
    """(FastAPI app, Server) for `config`: loads the model unless given, starts the threads."""
    try:  # the `serve` extra; imported here so `musilingo --help` stays fast
        import uvicorn  # noqa: F401

        from musilingo_cli.pipelines.serve.app import Server, create_app
        from musilingo_cli.pipelines.serve.workers import Arrivals
    except ImportError as err:
        raise ConfigError(
            f"musilingo serve needs FastAPI, uvicorn and pybase64 ({err.name} is missing): "
            "pip install 'musilingo-cli[serve]'"
        ) from None
    from musilingo_cli.model.generation import GenerationSettings
    from musilingo_cli.model.live_batch import Engine
    from musilingo_cli.pipelines.ask import resolve_and_load
    from musilingo_cli.pipelines.chat import check_template

    check_template(config.template)
    if config.max_new_tokens < 1 or (config.max_batch is not None and config.max_batch < 1):
        raise ConfigError("--max-new-tokens and --max-batch must be at least 1")
    if config.allowed_local_media_path and not Path(config.allowed_local_media_path).is_dir():
        raise ConfigError(f"--allowed-local-media-path {config.allowed_local_media_path}: not a directory")
    resolved, model = resolve_and_load(config, model)
    if str(resolved.device) == "cpu":
        config = dataclasses.replace(config, encoder_threads=config.encoder_threads or 2)
        split_cpu_threads(config.cpu_threads, config.encoder_threads + 1)
    max_batch = config.max_batch or (256 if str(resolved.device).startswith("cuda") else 32)
    arriving = Arrivals()
    # on CPU the encoder and the decoding loop share the cores: the loop holds while a burst is encoded
    hold = str(resolved.device) == "cpu" and config.hold_seconds > 0
    engine = Engine(
        model,
        max_batch=max_batch,
        max_waiting=config.max_waiting,
        coming=arriving.count if hold else None,
        hold_seconds=config.hold_seconds,
    )
    server = Server(model, engine, config, arriving)
    server.engine_settings = GenerationSettings.from_preset(config.preset, max_new_tokens=config.max_new_tokens)
    return create_app(server), server


def split_cpu_threads(threads: int | None, compute_threads: int) -> int:
    """Set torch's intra-op threads for a CPU server; returns the number set.

    The server runs `compute_threads` threads that call torch at once (the encoder threads and the
    decoding loop), and each torch op would otherwise fan out over every core: several times as
    many busy threads as cores, and OpenMP's barriers then wait on threads the kernel has not
    scheduled (measured on a busy 2-core machine: a tiny encoder at 37 ms per clip with one
    thread, 345-1300 ms with two). None shares the cores out (at least one thread each);
    OMP_NUM_THREADS, when set, is left to rule.
    """
    import torch

    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        threads = max(1, torch.get_num_threads() // max(1, compute_threads))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def run(config: ServeConfig) -> None:
    """Serve until interrupted. Raises ConfigError, before the model loads, when the port is taken."""
    _check_port(config.host, config.port)
    app, server = build(config)
    import uvicorn  # present: build() checked the extra

    where = f"http://{config.host}:{config.port}"
    stderr.print(
        f"musilingo serve: {where}/v1/chat/completions, web demo at {where}/"
        + (" (API key required)" if config.api_key else ""),
        highlight=False,
        soft_wrap=True,
    )
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)
    finally:
        server.close()


def _check_port(host: str, port: int) -> None:
    """One line now, rather than uvicorn's bind error after the model has loaded."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port") from None
