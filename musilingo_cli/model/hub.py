"""Find model files locally or on the Hugging Face hub (honouring HF_HUB_OFFLINE), with one
clear line when they are missing. Nothing here ever runs code from a repository."""

from __future__ import annotations

import os
from pathlib import Path

from musilingo_cli.core.errors import CheckpointError


def resolve_dir(name_or_path: str, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A local directory for `name_or_path`: the path itself, or a hub snapshot (downloaded
    unless offline). `what` names the part in errors ("audio encoder", "LLM", ...)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise CheckpointError(f"{what} {name_or_path!r} is not a directory nor a hub id like 'org/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=allow_patterns))
    except Exception as err:  # offline + not cached, 404, gated repo, network error
        raise CheckpointError(missing_message(name_or_path, what, err)) from None


def missing_message(repo_id: str, what: str, err: Exception) -> str:
    """One line: which weights are missing and how to get them."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    how = f"`hf download {repo_id}` on a machine with internet, or pass a local directory"
    if offline:
        return f"{what} {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; get it with {how}"
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"could not fetch {what} {repo_id!r} from the Hugging Face hub ({reason}); get it with {how}"
