"""Time `musilingo eval`'s scoring against the plain official metric loop, on ~2,800 caption pairs.

    python benchmarks/bench_eval.py                       # both profiles, MusicCaps captions
    python benchmarks/bench_eval.py --profile standard --limit 500
    python benchmarks/bench_eval.py --rounds 3                 # interleaved rounds and the median ratio

Pairs: MusicCaps' training captions as predictions against its `is_audioset_eval` captions as
references (../shared/data/musiccaps-public.csv), as many pairs as the eval split has (2,858).

- plain: the official libraries called the plain way, model row only, no floor: sacrebleu
  `corpus_score` once per BLEU order (13a, no smoothing) or NLTK `sentence_bleu` on characters
  twice per item, NLTK `meteor_score` per item, rouge_score `RougeScorer.score` per item, and
  (standard profile) pycocoevalcap's `Cider().compute_score` on NLTK `word_tokenize` tokens.
- ours: `metrics.score_rows` for the model row AND its floor (shuffled references), all cores.

Each side runs in a fresh interpreter (each pays its own WordNet and punkt load). The script prints
both wall times, the ratio plain / ours, and checks that the model row's numbers are identical.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CSV = ROOT.parent / "shared" / "data" / "musiccaps-public.csv"


def pairs(limit: int | None) -> tuple[list[str], list[str]]:
    """(predictions, references): training captions against eval captions, in file order."""
    with CSV.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    refs = [r["caption"] for r in rows if r["is_audioset_eval"] == "True"]
    preds = [r["caption"] for r in rows if r["is_audioset_eval"] != "True"][: len(refs)]
    n = min(len(refs), len(preds), limit or len(refs))
    return preds[:n], refs[:n]


def plain(profile: str, preds: list[str], refs: list[str]) -> dict[str, float]:
    """The plain loop: each official library call as documented, model row only."""
    import math
    import warnings

    from nltk.translate.bleu_score import sentence_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    from musilingo_cli.pipelines.evaluate.nltk_data import ensure_punkt, ensure_wordnet

    ensure_wordnet()
    out: dict[str, float] = {}
    if profile == "standard":
        ensure_punkt()
        from nltk import word_tokenize as tokenize

        for n in (1, 2, 3, 4):
            bleu = BLEU(max_ngram_order=n, smooth_method="none", tokenize="13a")
            out[f"bleu{n}"] = bleu.corpus_score(preds, [refs]).score / 100.0
        scorer, part = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False), "fmeasure"
    else:
        from nltk.tokenize import wordpunct_tokenize as tokenize

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["bleu_mean"] = math.fsum(float(sentence_bleu([r], p)) for p, r in zip(preds, refs)) / len(preds)
            out["bleu4"] = math.fsum(
                float(sentence_bleu([r], p, weights=(0.0, 0.0, 0.0, 1.0))) for p, r in zip(preds, refs)
            ) / len(preds)
        scorer, part = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True), "recall"
    meteor = [float(meteor_score([tokenize(r)], tokenize(p))) for p, r in zip(preds, refs)]
    out["meteor"] = math.fsum(meteor) / len(meteor)
    rouge = [float(getattr(scorer.score(r, p)["rougeL"], part)) for p, r in zip(preds, refs)]
    out["rouge_l"] = math.fsum(rouge) / len(rouge)
    if profile == "standard":  # CIDEr-D: pycocoevalcap's Cider on the texts in cider.py's token form
        from pycocoevalcap.cider.cider import Cider

        from musilingo_cli.pipelines.evaluate.cider import cider_text

        gts = {i: [cider_text(r, tokenize)] for i, r in enumerate(refs)}
        res = {i: [cider_text(p, tokenize)] for i, p in enumerate(preds)}
        out["cider_d"] = float(Cider().compute_score(gts, res)[0])
    return out


def ours(profile: str, preds: list[str], refs: list[str]) -> dict[str, float]:
    """musilingo's scoring: the model row and its floor together."""
    from musilingo_cli.pipelines.evaluate import metrics
    from musilingo_cli.pipelines.evaluate.pairing import floor_references

    floor, _ = floor_references([""] * len(refs), refs, seed=0)
    model_row, _floor_row = metrics.score_rows([preds, floor], refs, profile)
    return {k: v for k, v in model_row.scores.items() if v is not None}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the forked workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child(side: str, profile: str, limit: int | None) -> None:
    preds, refs = pairs(limit)
    start, cpu = time.perf_counter(), _cpu()
    scores = (plain if side == "plain" else ours)(profile, preds, refs)
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu, "scores": scores, "n": len(preds)}))


def run_side(side: str, profile: str, limit: int | None) -> dict:
    args = [sys.executable, __file__, "--child", side, "--profile", profile]
    if limit:
        args += ["--limit", str(limit)]
    start = time.perf_counter()
    done = subprocess.run(args, check=False, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("standard", "musilingo-paper", "both"), default="both")
    parser.add_argument("--limit", type=int, default=None, help="use the first N pairs")
    parser.add_argument(
        "--rounds", type=int, default=1, help="plain and ours N times, interleaved; each ratio and their median"
    )
    parser.add_argument("--child", choices=("plain", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.profile, args.limit)
        return
    profiles = ("standard", "musilingo-paper") if args.profile == "both" else (args.profile,)
    print(f"cores: {os.cpu_count()}  python {sys.version.split()[0]}")
    for profile in profiles:
        ratios = [_round(profile, args.limit) for _ in range(max(1, args.rounds))]
        if len(ratios) > 1:
            shown = ", ".join(f"{r:.2f}x" for r in ratios)
            print(f"{profile:16s} wall ratios {shown}  |  median {statistics.median(ratios):.2f}x")


def _round(profile: str, limit: int | None) -> float:
    """One plain run and one of ours, side by side; prints both and returns plain / ours (wall)."""
    base = run_side("plain", profile, limit)
    fast = run_side("ours", profile, limit)
    same = all(fast["scores"].get(k) == v for k, v in base["scores"].items())
    ratio = base["seconds"] / fast["seconds"]
    print(
        f"{profile:16s} n={base['n']}  plain loop (model row, no floor) {base['seconds']:.2f} s "
        f"(cpu {base['cpu']:.1f} s)  |  ours (model row + floor) {fast['seconds']:.2f} s "
        f"(cpu {fast['cpu']:.1f} s)  |  "
        f"ratio {ratio:.2f}x wall, {base['cpu'] / fast['cpu']:.2f}x cpu  |  "
        f"identical numbers: {same}  |  load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if not same:
        for key, value in base["scores"].items():
            print(f"  {key}: plain {value!r} ours {fast['scores'].get(key)!r}")
    return ratio


if __name__ == "__main__":
    main()
