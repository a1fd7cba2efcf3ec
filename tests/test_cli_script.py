"""The installed `musilingo` console script as a user meets it, each case in a child process:
usage errors are one line plus the help hint (exit 2), -h is --help, shell completion works,
refusals are one line (the traceback only with --verbose or MUSILINGO_DEBUG), library chatter
stays off stdout, and a missing optional extra names the pip install to run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from audio_helpers import write_music

SCRIPT = Path(sys.executable).with_name("musilingo")


def musilingo(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    quiet = {k: v for k, v in os.environ.items() if k not in ("MUSILINGO_DEBUG", "MUSILINGO_VERBOSE")}
    full = {**quiet, "COLUMNS": "100", **(env or {})}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=120)


def test_the_console_script_is_installed():
    assert SCRIPT.is_file(), "run ./scripts/install.sh --test: the tests use the installed console script"


@pytest.mark.parametrize(
    "args, command, says",
    [
        (["ask", "--frobnicate"], "musilingo ask", "No such option: --frobnicate"),
        (["ask", "--seed", "abc", "a.wav", "q"], "musilingo ask", "Invalid value for '--seed'"),
        (["make-mi"], "musilingo make-mi", "Missing option '--captions'"),
        (["frob"], "musilingo", "No such command 'frob'"),
        (["eval", "--bertscore-batch-size"], "musilingo eval", "Option '--bertscore-batch-size' requires an argument"),
        (["--nope"], "musilingo", "No such option: --nope"),
    ],
)
def test_usage_errors_are_one_line_and_the_help_hint_with_exit_2(args, command, says):
    done = musilingo(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("error: ") and says in lines[0]
    assert lines[1] == f"Try '{command} --help' for help."


@pytest.mark.parametrize("sub", [[], ["ask"], ["train"], ["make-mi"], ["eval"]])
def test_dash_h_is_help(sub):
    short, long_ = musilingo(*sub, "-h"), musilingo(*sub, "--help")
    assert short.returncode == long_.returncode == 0, short.stderr
    assert short.stdout == long_.stdout and "Usage: musilingo" in short.stdout


def test_shell_completion_installs_into_home_and_completes(tmp_path):
    done = musilingo("--install-completion", "bash", env={"HOME": str(tmp_path), "SHELL": "/bin/bash"})
    assert done.returncode == 0, done.stderr
    script = tmp_path / ".bash_completions" / "musilingo.sh"
    assert "_MUSILINGO_COMPLETE" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    # what bash then runs on <TAB>: the script completes subcommands and options
    env = {"_MUSILINGO_COMPLETE": "complete_bash", "COMP_WORDS": "musilingo as", "COMP_CWORD": "1"}
    assert musilingo(env=env).stdout.split() == ["ask"]
    env = {"_MUSILINGO_COMPLETE": "complete_bash", "COMP_WORDS": "musilingo ask --max-s", "COMP_CWORD": "2"}
    assert musilingo(env=env).stdout.split() == ["--max-seconds"]


def test_a_refusal_is_one_line_and_verbose_or_debug_shows_the_traceback(tmp_path):
    song = tmp_path / "song.wav"
    write_music(song, 1.0, 16000)
    done = musilingo("ask", str(song), "What genre?", "--format", "xml")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: --format must be text or json, not 'xml'"]
    for extra, env in ((["--verbose"], None), ([], {"MUSILINGO_DEBUG": "1"})):
        loud = musilingo("ask", str(song), "What genre?", "--format", "xml", *extra, env=env)
        assert loud.returncode != 0 and "Traceback" in loud.stderr and "ConfigError" in loud.stderr


def test_writing_onto_a_folder_is_one_line_naming_it(tmp_path):
    song = tmp_path / "song.wav"
    write_music(song, 1.0, 16000)
    folder = tmp_path / "answers"
    folder.mkdir()
    done = musilingo("ask", str(song), "What genre?", "-o", str(folder), "--encoder", "x/y", "--llm", "x/z")
    assert done.returncode == 2, done.stderr  # a bad -o is an option error
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], done.stderr
    assert "folder" in lines[0]


def test_json_and_format_json_are_one_flag(tmp_path):
    both = musilingo("eval", "-p", "a.jsonl", "--json", "--format", "csv", cwd=tmp_path)
    assert both.returncode == 2 and "--json and --format csv disagree" in both.stderr


def _blocking_site(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment whose interpreter cannot import `modules`, as if their extra were not installed
    (a sitecustomize on PYTHONPATH puts a finder first that refuses them)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"BLOCKED = {sorted(modules)!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    return {"PYTHONPATH": str(site)}


@pytest.mark.parametrize(
    "args, extra",
    [
        (["train", "--data", "x.jsonl"], "train"),
        (["make-mi", "--captions", "c.csv"], "make-mi"),
        (["eval", "-p", "a.jsonl", "-r", "b.json"], "eval"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_pip_install(tmp_path, args, extra):
    env = _blocking_site(tmp_path, "deepspeed", "openai", "nltk", "rouge_score", "bert_score", "sacrebleu")
    done = musilingo(*args, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"pip install 'musilingo-cli[{extra}]'" in lines[0], done.stderr


def test_an_unreachable_hub_is_said_once_and_eval_goes_on_offline(tmp_path):
    import json

    from train_helpers import free_port

    answers = tmp_path / "answers.jsonl"
    rows = [
        ("What genre?", "Rock.", "It is rock."),
        ("What tempo?", "Fast.", "A slow tempo."),
        ("What genre?", "Jazz.", "Jazz with piano."),
    ]
    answers.write_text(
        "".join(
            json.dumps({"id": str(i), "question": q, "answer": a, "reference": r}) + "\n"
            for i, (q, a, r) in enumerate(rows)
        )
    )
    env = {
        "HF_HUB_OFFLINE": "",
        "TRANSFORMERS_OFFLINE": "",
        "HF_DATASETS_OFFLINE": "",
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "HF_HOME": str(tmp_path / "hf"),
    }
    done = musilingo("eval", "-p", str(answers), "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("the Hugging Face hub cannot be reached") == 1, done.stderr
    assert "Retrying" not in done.stderr and len(done.stderr.splitlines()) <= 3, done.stderr
    notes = json.loads(done.stdout)[0]["notes"]
    assert any("BERTScore skipped" in n and "roberta-large" in n for n in notes), notes


def test_a_single_unreadable_file_is_one_line_before_any_model_loads(tmp_path):
    from audio_helpers import write_corrupt

    write_corrupt(tmp_path / "bad.wav")
    no_model = str(tmp_path / "no-such-model")  # were the model loaded first, its error would show instead
    for name, says in (("missing.wav", "missing.wav: no such file; check the path"), ("bad.wav", "bad.wav: ")):
        done = musilingo("ask", name, "What genre?", "--model", no_model, cwd=tmp_path)
        assert done.returncode != 0 and done.stdout == "", done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], done.stderr
        assert "--retry-errors" not in done.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["train", "--data", "gone.jsonl"], "--data gone.jsonl: no such file"),
        (["eval", "-p", "gone.jsonl"], "--predictions gone.jsonl: no such file"),
        (["eval", "-p", "a.jsonl", "-r", "gone.json"], "--references gone.json: no such file"),
    ],
)
def test_missing_local_inputs_are_said_before_the_hub_is_probed(tmp_path, args, says):
    from train_helpers import free_port

    (tmp_path / "a.jsonl").write_text('{"id": "1", "answer": "Rock."}\n')
    env = {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    done = musilingo(*args, env=env, cwd=tmp_path)
    assert done.returncode != 0, done.stderr
    assert done.stderr.splitlines() == [f"error: {says} or folder; check the path"], done.stderr


@pytest.mark.parametrize("sub", [[], ["ask"], ["train"], ["make-mi"], ["eval"], ["chat"], ["serve"], ["export"]])
def test_help_shows_flags_as_flags_and_types_only_for_values(sub):
    done = musilingo(*sub, "--help", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "<bool>" not in done.stdout, done.stdout
    help_line = next(line for line in done.stdout.splitlines() if "--help" in line)
    assert "<" not in help_line  # the flag itself: no type column
    if sub:
        assert "<int>" in done.stdout or "<path>" in done.stdout or "<str>" in done.stdout  # values keep types


def test_ask_chat_and_serve_share_the_model_and_device_options():
    def option_lines(sub: str) -> dict[str, str]:
        done = musilingo(sub, "--help", env={"COLUMNS": "200"})
        assert done.returncode == 0, done.stderr
        lines = [" ".join(line.strip("│ ").split()) for line in done.stdout.splitlines()]
        return {name: next(x for x in lines if x.startswith(name + " ")) for name in SHARED}

    SHARED = ("--model", "--device", "--dtype", "--encoder-dtype")
    assert option_lines("ask") == option_lines("chat") == option_lines("serve")


@pytest.mark.parametrize("sub", ["train", "make-mi", "ask"])
def test_piped_help_is_wide_enough_for_every_option_name(sub):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "MUSILINGO_DEBUG")}
    done = subprocess.run([str(SCRIPT), sub, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout, done.stdout  # rich's 80-column default cut --gradient-checkpoin…
