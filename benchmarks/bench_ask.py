"""Benchmark `musilingo ask`: one-at-a-time versus batched, with random weights (nothing downloaded).

    .venv/bin/python benchmarks/bench_ask.py                      # tiny models on CPU
    python benchmarks/bench_ask.py --device cuda --full-size     # MERT-330M + 7B Llama shapes, bf16

Reports, each from one run after a warm-up (the fast path first, so a cut-short GPU run still has it):
  1. LLM decoding at batch 1, ms per token, measured as (time for N new tokens - time for 1) / (N - 1)
     so prefill is excluded: our loop (CUDA-graphed step on CUDA), later against transformers'
     generate with the dynamic cache and with its static cache + compile, and our loop eager;
  2. a batch job through the real `ask` pipeline (WAV files on disk -> decode/resample threads ->
     encoder -> generate -> records): clips per second for ten-second clips at exactly 64 new tokens
     (stop string off, min_new_tokens=64), batched, later one clip at a time;
  3. the decoding step at the job's batch size;
  4. the encoder: ms per 10 s clip, one at a time vs batched (equal lengths).
The tokenizer is the tests' tiny one (ids < 32001 fit the 7B vocab); answers are noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def say(*parts) -> None:
    print(*parts, flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(device: str, full: bool, tmp: Path):
    """A MusiLingo with random weights built directly on the device."""
    from model_helpers import make_tokenizer
    from shapes import llama_config, mert_config
    from transformers import HubertModel, LlamaForCausalLM

    from musilingo_cli.model.config import ModelConfig
    from musilingo_cli.model.encoder import AudioEncoder, mert_to_hubert_config
    from musilingo_cli.model.llm import freeze, load_tokenizer
    from musilingo_cli.model.musilingo import MusiLingo

    make_tokenizer(tmp / "tok")
    tok = load_tokenizer(str(tmp / "tok"))
    dtype = torch.bfloat16 if full else torch.float32
    mert, llm_cfg = mert_config(full), llama_config(full, len(tok))  # MERT-v1-330M and a Vicuna-7B-shaped Llama
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            hubert = HubertModel(mert_to_hubert_config(mert))
            llm = LlamaForCausalLM(llm_cfg)
    finally:
        torch.set_default_dtype(previous)
    # a legacy torch.Tensor(...) parameter (masked_spec_embed) ignores the device context
    encoder = AudioEncoder(hubert.to(device), 24000, normalize=True)
    llm.to(device)
    config = ModelConfig.for_stage(
        "finetune",
        encoder="random",
        llm="random",
        encoder_hidden_size=hubert.config.hidden_size,
        llm_hidden_size=llm_cfg.hidden_size,
        num_hidden_states=encoder.num_hidden_states,
    )
    config = dataclasses.replace(config, end_sym="")  # no stop string: every answer is exactly N tokens
    model = MusiLingo(config, freeze(llm), tok, encoder)
    model.adapter.to(device)
    return model


def bench_encoder(model, device: str, batch: int, repeats: int) -> dict:
    clip = torch.randn(batch, 10 * 24000) * 0.1
    model.encode(clip[:1])
    model.encode(clip)
    sync(device)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        for k in range(batch):
            model.encode(clip[k : k + 1])
    sync(device)
    alone = (time.perf_counter() - t0) / (repeats * batch)
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.encode(clip)
    sync(device)
    batched = (time.perf_counter() - t0) / (repeats * batch)
    return {"alone_ms": alone * 1e3, "batched_ms": batched * 1e3}


HF = {
    "hf-dynamic": "transformers generate, dynamic cache",
    "hf-static": "transformers generate, static cache + compile",
}


def label(how: str) -> str:
    from musilingo_cli.model.decoding import MODES

    return HF.get(how) or f"our loop, {MODES[how]}"


def decoder_for(model, mode: str):
    """The decoder `model.generate(..., compile=True)` (what the ask job calls on CUDA) uses,
    switched to `mode`; one instance per mode, so each compiles once."""
    from musilingo_cli.model.decoding import Decoder

    made = model.__dict__.setdefault("_bench_decoders", {})
    if mode not in made:
        made[mode] = Decoder(model.llm, mode)
    model._decoder(True)  # creates the model's registry
    model.__dict__["_decoders"][True] = made[mode]
    return made[mode]


def bench_decode(model, device: str, tokens: int, how: str, batch: int = 1) -> float:
    """ms per decoding step for `batch` ten-second clips (prefill excluded): transformers' generate
    (`how` in HF) or our loop in decoding mode `how`."""
    from musilingo_cli.model.generation import GenerationSettings

    feats = model.encode(torch.randn(1, 10 * 24000) * 0.1)[0]
    prompt = model.build_batch([feats] * batch, ["Describe the music in detail."] * batch, padding_side="left")
    mask = prompt.attention_mask.to(device)
    decoder = None if how in HF else decoder_for(model, how)

    def timed(n: int) -> float:
        settings = GenerationSettings.from_preset("greedy", max_new_tokens=n, min_new_tokens=n)
        sync(device)
        t0 = time.perf_counter()
        if decoder is None:
            static = {"cache_implementation": "static"} if how == "hf-static" else {"disable_compile": True}
            model.llm.generate(
                inputs_embeds=prompt.inputs_embeds,
                attention_mask=mask,
                pad_token_id=0,
                **settings.generate_kwargs(),
                **static,
            )
        else:
            decoder.generate(prompt.inputs_embeds, mask, settings, [2], 0)
        sync(device)
        return time.perf_counter() - t0

    timed(tokens)
    timed(1)  # warm-up (compiles on CUDA)
    return (timed(tokens) - timed(1)) / (tokens - 1) * 1e3


def job_config(device: str, files: list[str], batch: int, enc_batch: int, compiled: bool, workers: int | None):
    from musilingo_cli.pipelines.ask import AskConfig

    return AskConfig(
        inputs=files,
        questions=["Describe the music in detail."],
        preset="greedy",
        max_new_tokens=64,
        device=device,
        dtype="bf16" if device.startswith("cuda") else "fp32",
        batch_size=batch,
        encoder_batch_size=enc_batch,
        compile=compiled,
        workers=workers,
        generate_options={"min_new_tokens": 64},
        on_record=lambda r: None,
    )


def bench_job(
    model, device: str, files: list[str], batch: int, enc_batch: int, compiled: bool, workers: int | None
) -> float:
    """Clips per second through the real ask pipeline (decode threads, encoder, generate, records)."""
    from musilingo_cli.pipelines.ask import run

    config = job_config(device, files, batch, enc_batch, compiled, workers)
    run(dataclasses.replace(config, inputs=files[:batch]), model=model)  # compile / allocate for this batch size
    sync(device)
    t0 = time.perf_counter()
    summary = run(config, model=model)
    sync(device)
    assert summary["answered"] == len(files), summary
    return len(files) / (time.perf_counter() - t0)


def job_breakdown(model, device: str, files: list[str], batch: int, enc_batch: int, workers: int | None) -> str:
    """The job once more with timers: the main thread's seconds generating (prefill + decoding) and in
    the rest (waiting for the encoder thread, writing), and the encoder thread's seconds encoding and
    waiting for decoded audio (both overlapped with generation)."""
    from musilingo_cli.pipelines import answering, ask

    spent = {"generate": 0.0, "wait for audio": 0.0, "encode": 0.0}

    def timing(name, fn):  # both end by copying to the host, so their wall time is their work
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[name] += time.perf_counter() - t0
            return out

        return timed

    def waited(*args, **kwargs):
        source = real_ahead(*args, **kwargs)
        try:
            while True:
                t0 = time.perf_counter()
                item = next(source, None)
                spent["wait for audio"] += time.perf_counter() - t0
                if item is None:
                    return
                yield item
        finally:
            source.close()

    real_ahead = answering.decode_ahead
    answering.decode_ahead = waited
    model.encode, model.generate = timing("encode", model.encode), timing("generate", model.generate)
    try:
        t0 = time.perf_counter()
        ask.run(job_config(device, files, batch, enc_batch, True, workers), model=model)
        total = time.perf_counter() - t0
    finally:
        answering.decode_ahead = real_ahead
        del model.encode, model.generate  # back to the class's methods
    rest = total - spent["generate"]
    return (
        f"{total:.2f} s: main thread generating {spent['generate']:.2f} s, the rest (incl. waiting for the "
        f"encoder thread) {rest:.2f} s; encoder thread encoding {spent['encode']:.2f} s and waiting for "
        f"decoded audio {spent['wait for audio']:.2f} s (overlapped)"
    )


def write_clips(directory: Path, n: int) -> list[str]:
    """Ten-second 44.1 kHz stereo WAVs (so decode, downmix and resampling are all exercised)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    files = []
    for k in range(n):
        path = directory / f"clip{k:04d}.wav"
        sf.write(path, (rng.standard_normal((441000, 2)) * 0.1).astype(np.float32), 44100, subtype="PCM_16")
        files.append(str(path))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full-size", action="store_true", help="MERT-330M + 7B Llama shapes in bf16 (GPU)")
    parser.add_argument("--quick", action="store_true", help="fewer clips and repeats")
    parser.add_argument(
        "--clips", type=int, default=None, help="clips in the batched job (default 4 batches GPU / 64 CPU)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="generation batch (default 256 GPU / 16 CPU)")
    parser.add_argument("--encoder-batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: ask's)")
    parser.add_argument(
        "--only-job",
        action="store_true",
        help="only the product's defaults: decoding mode, encoder batch, the job and its decode step",
    )
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    batch = args.batch_size or (256 if cuda else 16)
    clips = args.clips or ((2 if args.quick else 4) * batch if cuda else (32 if args.quick else 64))
    tokens = 32 if args.quick else 64

    import transformers

    say(
        f"bench_ask: device {args.device}"
        + (f" ({torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores)" if cuda else "")
        + f", {'full-size' if args.full_size else 'tiny'} random weights, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = build(args.device, args.full_size, Path(tmp))
        say(f"built model in {time.perf_counter() - t0:.1f} s")
        modes = ["compiled-graph", "graph"] if cuda else ["compiled", "eager"]
        per_token = {modes[0]: 0.0}  # --only-job: the product's mode, not timed at batch 1
        for mode in [] if args.only_job else modes:
            per_token[mode] = bench_decode(model, args.device, tokens, mode)
            say(f"decode batch 1, {label(mode)}: {per_token[mode]:.2f} ms/token")
        best = min(per_token, key=per_token.get)
        decoder_for(model, best)
        per_clip = {}
        for size in [args.encoder_batch_size] if args.only_job else sorted({args.encoder_batch_size, 64}):
            enc = bench_encoder(model, args.device, size, 2 if args.quick else 5)
            per_clip[size] = enc["batched_ms"]
            say(
                f"encoder, 10 s clip: one at a time {enc['alone_ms']:.2f} ms/clip, batch {size} "
                f"{enc['batched_ms']:.2f} ms/clip ({enc['alone_ms'] / enc['batched_ms']:.2f}x)"
            )
        enc_batch = min(per_clip, key=per_clip.get)
        files = write_clips(Path(tmp), clips)
        together = bench_job(model, args.device, files, batch, enc_batch, True, args.workers)
        say(f"job, batch {batch}, encoder batch {enc_batch}, {label(best)}, {clips} clips: {together:.2f} clips/s")
        say(f"job breakdown: {job_breakdown(model, args.device, files, batch, enc_batch, args.workers)}")
        step = bench_decode(model, args.device, tokens, best, batch=batch)
        say(f"decode batch {batch}, {label(best)}: {step:.2f} ms/step, {batch * 1e3 / step:.0f} tokens/s")
        if not args.only_job:
            baselines(args, model, cuda, tokens, per_token[best], files[: max(2, min(clips // 16, 8))], together)
        if cuda:
            say(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def baselines(args, model, cuda: bool, tokens: int, ours: float, files: list[str], together: float) -> None:
    """The slow ways, after the fast path: the job one clip at a time, and batch-1 decoding by
    transformers' generate (and by torch.compile's own CUDA graphs)."""
    alone = bench_job(model, args.device, files, 1, 1, False, args.workers)
    say(f"job, one at a time, {len(files)} clips: {alone:.2f} clips/s (batched is {together / alone:.1f}x faster)")
    for how in ["hf-dynamic", "hf-static", "reduce-overhead"] if cuda else ["hf-dynamic"]:
        other = bench_decode(model, args.device, tokens, how)
        say(f"decode batch 1, {label(how)}: {other:.2f} ms/token (ours is {other / ours:.2f}x faster)")


if __name__ == "__main__":
    main()
