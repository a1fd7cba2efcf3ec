"""Benchmark `ask --quantize`: peak GPU memory, ms/token at batch 1 and clips/s at batch 64, for the LLM
in bf16, 8-bit and 4-bit (NF4), with random weights at full size (MERT-v1-330M and Vicuna-7B shapes).

    python benchmarks/bench_quantize.py --device cuda                   # bf16, 8bit, 4bit (each its own process)
    python benchmarks/bench_quantize.py --device cuda --only 4bit       # one of them
    .venv/bin/python benchmarks/bench_quantize.py --device cpu --tiny   # the tests' tiny shapes (a smoke run)

The models are written once to --dir (default /tmp/bench-quantize: about 15 GB at full size) in the hub's
layout, then each precision runs in a fresh process through what `ask` does: `load_model` with
`--encoder DIR --llm DIR [--quantize ...]` (an untrained adapter), ten-second clips, our decoding loop.
  1. memory after loading, the peak of answering one 10 s clip (what a 12 GB card must hold), and the
     peak of the batch-64 job (the KV cache for 64 rows grows it);
  2. ms per new token at batch 1 through model.generate (prefill excluded: (t(N) - t(1)) / (N - 1));
  3. clips/s of the real ask pipeline (WAV files -> decode threads -> encoder -> generate) at batch 64,
     exactly 64 new tokens per answer.
The issue's target: MERT-330M + the 7B LLM in at most 10 GB at 4-bit. The LLM folder's tokenizer spells
JSON, so `bench_json.py --llm DIR/full/llm --schema tags` times the JSON constraint at the 7B shape.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

import torch  # noqa: E402


def say(*parts) -> None:
    print(*parts, flush=True)


def prepare(directory: Path, tiny: bool, device: str) -> None:
    """Random MERT (hub layout, legacy weight-norm names) and Llama (safetensors + the tests' tokenizer)."""
    from model_helpers import JSON_ALPHABET, _legacy_name, make_llm, make_tokenizer
    from shapes import llama_config, mert_config
    from transformers import HubertModel, LlamaForCausalLM

    from musilingo_cli.model.encoder import mert_to_hubert_config

    if (directory / "done").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mert = mert_config(not tiny)
    torch.manual_seed(0)
    hubert = HubertModel(mert_to_hubert_config(mert))
    (directory / "mert").mkdir(exist_ok=True)
    torch.save(
        {_legacy_name(k): v.contiguous() for k, v in hubert.state_dict().items()},
        directory / "mert" / "pytorch_model.bin",
    )
    (directory / "mert" / "config.json").write_text(json.dumps(mert))
    (directory / "mert" / "preprocessor_config.json").write_text(
        json.dumps({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 24000, "do_normalize": True})
    )
    del hubert
    if tiny:
        make_llm(directory / "llm", extra_alphabet=JSON_ALPHABET)
    else:
        make_tokenizer(directory / "llm", extra_alphabet=JSON_ALPHABET)  # ids < 400 fit the 7B vocabulary; spells JSON
        config = llama_config(True)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                llm = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        llm.save_pretrained(directory / "llm")
        del llm
    (directory / "done").write_text("")
    say(f"wrote random models to {directory} in {time.perf_counter() - t0:.0f} s")


def measure(directory: Path, device: str, quantize: str | None, batch: int, clips: int, tokens: int) -> None:
    from bench_ask import write_clips

    from musilingo_cli.model.generation import GenerationSettings
    from musilingo_cli.model.loader import load_model
    from musilingo_cli.pipelines.ask import AskConfig, run

    cuda = device.startswith("cuda")

    def gib(reset: bool = True) -> float:
        """The peak GPU memory (GiB) since the last reset; resets it."""
        if not cuda:
            return float("nan")
        peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats() if reset else None
        return peak

    dtype = "bf16" if cuda else "fp32"
    t0 = time.perf_counter()
    model = load_model(
        None, encoder=str(directory / "mert"), llm=str(directory / "llm"), device=device, dtype=dtype, quantize=quantize
    )
    model.config = dataclasses.replace(model.config, end_sym="")  # no stop string: every answer is N tokens
    name = quantize or dtype
    held = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")
    say(
        f"[{name}] loaded in {time.perf_counter() - t0:.1f} s: {held:.2f} GiB held (peak while loading {gib():.2f} GiB)"
    )

    feats = model.encode(torch.randn(1, 10 * 24000) * 0.1)[0]

    def timed(n: int) -> float:
        settings = GenerationSettings.from_preset("greedy", max_new_tokens=n, min_new_tokens=n)
        torch.cuda.synchronize() if cuda else None
        start = time.perf_counter()
        model.generate([feats], ["Describe the music in detail."], settings, compile=cuda)
        torch.cuda.synchronize() if cuda else None
        return time.perf_counter() - start

    gib()
    timed(tokens), timed(1)  # warm-up: compile / CUDA graph capture
    per_token = (timed(tokens) - timed(1)) / (tokens - 1) * 1e3
    say(
        f"[{name}] batch 1: {per_token:.2f} ms/token; peak GPU memory answering one 10 s clip "
        f"{gib():.2f} GiB (model included)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        files = write_clips(Path(tmp), clips)
        config = AskConfig(
            inputs=files,
            questions=["Describe the music in detail."],
            preset="greedy",
            max_new_tokens=tokens,
            device=device,
            dtype=dtype,
            batch_size=batch,
            encoder_batch_size=16,
            generate_options={"min_new_tokens": tokens},
            on_record=lambda r: None,
        )
        gib()
        run(dataclasses.replace(config, inputs=files[:batch]), model=model)  # warm-up at this batch size
        torch.cuda.synchronize() if cuda else None
        start = time.perf_counter()
        summary = run(config, model=model)
        torch.cuda.synchronize() if cuda else None
        assert summary["answered"] == clips, summary
        rate = clips / (time.perf_counter() - start)
    say(
        f"[{name}] job, batch {batch}, {clips} clips of 10 s, {tokens} new tokens: {rate:.2f} clips/s; "
        f"peak GPU memory {gib():.2f} GiB (model included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dir", default="/tmp/bench-quantize", help="where the random models are written once")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny shapes (smoke run, CPU)")
    parser.add_argument("--only", choices=["bf16", "8bit", "4bit"], action="append", help="repeatable")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--clips", type=int, default=None, help="clips in the job (default: 2 batches)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prepare-only", action="store_true", help="write the random models and stop")
    parser.add_argument("--child", choices=["bf16", "8bit", "4bit"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = Path(args.dir) / ("tiny" if args.tiny else "full")
    clips = args.clips or 2 * args.batch
    if args.child:
        measure(directory, args.device, None if args.child == "bf16" else args.child, args.batch, clips, args.tokens)
        return
    import transformers

    gpu = f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""
    say(f"bench_quantize: {args.device}{gpu}, torch {torch.__version__}, transformers {transformers.__version__}")
    prepare(directory, args.tiny, args.device)
    if args.prepare_only:
        return
    for name in args.only or ["bf16", "8bit", "4bit"]:  # a fresh process each: peak memory is its own
        command = [sys.executable, __file__, "--child", name, "--device", args.device, "--dir", args.dir]
        command += ["--batch", str(args.batch), "--clips", str(clips), "--tokens", str(args.tokens)]
        command += ["--tiny"] if args.tiny else []
        done = subprocess.run(command)
        if done.returncode:
            say(f"[{name}] failed (exit {done.returncode})")


if __name__ == "__main__":
    main()
