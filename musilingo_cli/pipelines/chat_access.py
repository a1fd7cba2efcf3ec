"""Where make-mi's chat requests go and with which key, shown safely: URLs redacted wherever they are
printed, base URLs checked up front, the key read from a file or $OPENAI_API_KEY (a key file that
other users can read is warned about), and where the key came from named in hints."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from musilingo_cli.core.console import warn
from musilingo_cli.core.errors import ChatAPIError, ConfigError

DEFAULT_URL = "https://api.openai.com/v1"


def redact_url(url: str | None) -> str:
    """`url` safe to show: user:password replaced by ***, and the values of query parameters that
    look like secrets (key, token, secret, password, signature, auth) replaced by ***."""
    if not url:
        return DEFAULT_URL
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        secret = re.compile(r"key|token|secret|passw|sig|auth|credential", re.IGNORECASE)
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if secret.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_base_url(url: str | None, flag: str = "--base-url") -> None:
    """Raises ConfigError (one line, the URL redacted) unless `url` is None or an http(s) URL with a host."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"{flag} must be an http:// or https:// URL with a host, like http://127.0.0.1:8000/v1; "
            f"got {redact_url(url)!r}"
        )


def is_local_host(url: str | None) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    host = (urlsplit(url).hostname or "") if url else ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_key(key_file: str | Path | None = None) -> str | None:
    """The API key from `key_file` (first line) if given, else from OPENAI_API_KEY.

    Warns when the key file is readable by other users (chmod 600 fixes it)."""
    if key_file is None:
        return os.environ.get("OPENAI_API_KEY")
    try:
        mode = Path(key_file).stat().st_mode
        key = Path(key_file).read_text(encoding="utf-8").strip().splitlines()
    except OSError as err:
        raise ChatAPIError(f"--api-key-file {key_file}: cannot read it ({err.strerror})") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warn(
            f"--api-key-file {key_file} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {key_file}"
        )
    if not key or not key[0].strip():
        raise ChatAPIError(f"--api-key-file {key_file}: the file is empty; put the key on its first line")
    return key[0].strip()


def api_key_source(key_file: str | Path | None, key: str | None) -> str:
    """Where the key came from, for hints: the key file, $OPENAI_API_KEY, or that none was set."""
    if key_file is not None:
        return f"the key in --api-key-file {key_file}"
    if key:
        return "$OPENAI_API_KEY"
    return "no key (none was set: set OPENAI_API_KEY or pass --api-key-file)"


def preflight(base_url: str | None, api_key: str | None, timeout: float) -> None:
    """Before any request: raise ChatAPIError (one line, nothing sent) when the default OpenAI API is
    used without a key, or when the server's host and port do not accept a connection within
    `timeout` seconds (a TCP connect, no HTTP request, so nothing is billed)."""
    url = base_url or DEFAULT_URL
    parts = urlsplit(url)
    if not api_key and parts.hostname == urlsplit(DEFAULT_URL).hostname:
        raise ChatAPIError(
            f"no API key for {redact_url(url)}: set OPENAI_API_KEY or pass --api-key-file FILE "
            "(or point --base-url at a server that needs none); nothing was sent"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ChatAPIError(
            f"cannot reach {redact_url(url)} ({reason}): start the server or fix --base-url / $OPENAI_BASE_URL; "
            "nothing was sent"
        ) from None
