"""Every `musilingo` command line README.md shows runs offline the way a new user would meet it:
without the official weights in the cache, each ends with one line saying what is missing and how to
get it (never a traceback, never a hang), and the usage is accepted (no exit-2 usage error)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from audio_helpers import write_music

REPO = Path(__file__).resolve().parents[1]
MUSILINGO = Path(sys.executable).with_name("musilingo")


def readme_commands() -> list[str]:
    lines = re.findall(r"^    (musilingo .+?)\s*(?:#.*)?$", (REPO / "README.md").read_text(), flags=re.M)
    return [line.strip() for line in lines]


def test_readme_shows_each_subcommand():
    assert {shlex.split(c)[1] for c in readme_commands()} >= {"ask", "train", "eval", "chat", "serve"}


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_fails_offline_with_one_line(line, tmp_path):
    write_music(tmp_path / "song.wav", 2, 24000, seed=0)
    (tmp_path / "catalogue").mkdir()
    write_music(tmp_path / "catalogue" / "a.wav", 2, 24000, seed=1)
    # a new user's shell: none of the launcher variables an in-process training test leaves behind
    dist = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist}
    env.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "MUSILINGO_DEBUG": ""})
    args = [str(MUSILINGO), *shlex.split(line)[1:]]
    done = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr[-2000:]
    # it names what is missing: a model that is not cached, or an input file that is not there
    assert re.search(r"not in the Hugging Face cache|no such", errors[0]), errors[0]
