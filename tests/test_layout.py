"""The package's shape: every module imports alone, the declared packages are the real ones, the
0.1 import paths still resolve, and a built wheel carries the prompts and the NLTK data inside
`musilingo_cli` (nothing named `prompts` lands in site-packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "musilingo_cli"

# Imports the heavy third-party libraries once, then forks one child per module: each child
# imports that module first, in an interpreter holding none of ours, so a cycle that only works
# in one import order fails here.
_FORK_EACH = r"""
import os, sys
import numpy, torch, transformers  # noqa: F401  (shared by every child; none of ours yet)
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException as err:
            print(f"{name}: {type(err).__name__}: {err}", flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    names = []
    for path in sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"):  # __main__ runs the CLI
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = _modules()
    assert len(names) > 40 and "musilingo_cli.model.loader" in names
    done = subprocess.run([sys.executable, "-c", _FORK_EACH, *names], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_declared_packages_are_the_package_folders():
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert declared - {"musilingo_cli.prompts"} == found


def test_old_import_paths_warn_and_give_the_same_module():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import musilingo_cli.model.loader as new\n"
        "try:\n    import musilingo_cli.loading\nexcept DeprecationWarning as w:\n    print(w)\n"
        "warnings.simplefilter('ignore')\n"
        "import musilingo_cli.loading as old; from musilingo_cli.ask import AskConfig\n"
        "assert old is new, (old, new)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "musilingo_cli.loading moved to musilingo_cli.model.loader" in done.stdout


def test_public_api_names():
    import musilingo_cli

    assert callable(musilingo_cli.load_model) and callable(musilingo_cli.answer)
    assert musilingo_cli.ModelConfig().pool_window == 325
    assert musilingo_cli.MusiLingo.__name__ == "MusiLingo"


def _uv() -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else []


def test_built_wheel_carries_prompts_and_nltk_data_inside_the_package(tmp_path):
    uv = _uv()
    if not uv:
        pytest.skip("uv is not installed (scripts/install.sh installs it)")
    env = {**os.environ, "UV_OFFLINE": os.environ.get("UV_OFFLINE", "0")}
    subprocess.run(
        [*uv, "build", "--wheel", "-q", "--out-dir", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
        env=env,
    )
    wheel = next((tmp_path / "dist").glob("musilingo_cli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("prompts/")]
    assert "musilingo_cli/prompts/make_mi_short.txt" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    # the installed copy (first on sys.path) loads its prompts and NLTK data from its own folder
    code = (
        "import musilingo_cli, pathlib\n"
        f"assert musilingo_cli.__file__.startswith({str(tmp_path / 'site')!r}), musilingo_cli.__file__\n"
        "from musilingo_cli.pipelines.make_mi.prompts import load_prompt\n"
        "p = load_prompt('short'); print(len(p.system + p.user))\n"
        "from musilingo_cli.pipelines.evaluate import nltk_data\n"
        "print(nltk_data.BUNDLED_NLTK_DATA.is_relative_to(pathlib.Path(musilingo_cli.__file__).parent))\n"
        "import nltk; nltk_data.ensure_punkt(); print(nltk.word_tokenize('Two words.'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert done.returncode == 0, done.stderr
    size, inside, words = done.stdout.split("\n")[:3]
    assert int(size) > 100 and inside == "True" and words == "['Two', 'words', '.']"
