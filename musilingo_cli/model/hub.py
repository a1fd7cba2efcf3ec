"""Find model files locally or on the Hugging Face hub (honouring HF_HUB_OFFLINE), with one
clear line when they are missing. Nothing here ever runs code from a repository."""

from __future__ import annotations

import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from musilingo_cli.core.console import warn
from musilingo_cli.core.errors import CheckpointError


def looks_like_path(name_or_path: str) -> bool:
    """True for a spec written as a path (starting with '.', '/' or '~'), which is never a hub id."""
    return name_or_path.startswith((".", "/", "~"))


def resolve_dir(name_or_path: str, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A local directory for `name_or_path`: the path itself, or a hub snapshot (downloaded
    unless offline). `what` names the part in errors ("audio encoder", "LLM", ...)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or looks_like_path(name_or_path) or name_or_path.count("/") != 1:
        raise CheckpointError(f"{what} {name_or_path!r} is not a directory nor a hub id like 'org/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=allow_patterns))
    except Exception as err:  # offline + not cached, 404, gated repo, network error
        raise CheckpointError(missing_message(name_or_path, what, err)) from None


_WENT_OFFLINE = "MUSILINGO_HUB_UNREACHABLE"  # set beside HF_HUB_OFFLINE when the probe found no hub


def missing_message(repo_id: str, what: str, err: Exception) -> str:
    """One line: which weights are missing and how to get them."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    how = f"`hf download {repo_id}` on a machine with internet, or pass a local directory"
    if offline and os.environ.get(_WENT_OFFLINE):  # we set HF_HUB_OFFLINE ourselves: say why
        return f"{what} {repo_id!r} is not in the Hugging Face cache and the hub cannot be reached; get it with {how}"
    if offline:
        return f"{what} {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; get it with {how}"
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"could not fetch {what} {repo_id!r} from the Hugging Face hub ({reason}); get it with {how}"


def offline_requested() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").lower() in ("1", "true", "yes", "on") for n in names)


def hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the hub's endpoint answers within `timeout` seconds (any HTTP status counts),
    else the reason in a few words. Runs in a thread so that a hanging DNS lookup is bounded too."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint + "/api/whoami-v2", method="HEAD"), timeout=timeout)
            outcome.append(None)
        except urllib.error.HTTPError:  # 401 and friends: the server is there
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 - DNS failure, refused, TLS, timeout: all mean "not reachable"
            reason = getattr(err, "reason", err)
            outcome.append(f"{endpoint}: {str(reason).splitlines()[0] if str(reason) else type(reason).__name__}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"{endpoint}: no answer in {timeout:g} s"


def go_offline_if_unreachable(specs: list[str | None], timeout: float = 3.0, announce: bool = True) -> bool:
    """Probe the hub once when some spec is not a local path; if it cannot be reached, say so in
    one line on stderr and set HF_HUB_OFFLINE=1 for the rest of the run, so that the hub client
    answers from its cache at once instead of retrying each file. Returns True if offline now.

    `specs`: what the user named that may live on the hub (None = a default that does);
    `announce=False` keeps other ranks of a distributed run quiet."""
    if offline_requested():
        return True
    if all(s is not None and Path(s).expanduser().exists() for s in specs):
        return False
    reason = hub_reachable(timeout)
    if reason is None:
        return False
    if announce:
        warn(f"the Hugging Face hub cannot be reached ({reason}); going on offline with what is cached")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ[_WENT_OFFLINE] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported: it read the variable at import time
        constants.HF_HUB_OFFLINE = True
    return True
