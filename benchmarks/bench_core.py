"""Time the model core: encode (MERT hidden states + layer mean + pooling + projection) and
one generation step of the frozen LLM (prefill of a ~60-token prompt with 3 audio tokens, then
single-token decode steps with a DynamicCache). Random weights, nothing downloaded.

    python benchmarks/bench_core.py                              # tiny shapes on CPU (a smoke run)
    python benchmarks/bench_core.py --device cuda --full-size    # MERT-v1-330M + Vicuna-7B shapes, bf16 LLM

Prints ms per clip for 10 s and 30 s clips at batch 1 and 8 (encoder fp32 and bf16), and ms per
token for decode; ratios come from this one run on this one machine.
"""

from __future__ import annotations

import argparse
import inspect
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from musilingo_cli.model.adapter import combine_and_pool  # noqa: E402
from musilingo_cli.model.encoder import AudioEncoder, mert_to_hubert_config  # noqa: E402
from musilingo_cli.model.release import MERT_330M, VICUNA_7B  # noqa: E402

RATE = 24000
TINY_MERT = {
    **MERT_330M,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "conv_dim": [32] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
FULL_LLM = {
    "vocab_size": 32001,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
}
TINY_LLM = {
    "vocab_size": 32001,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}


def say(*args) -> None:
    print(*args, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time of `fn()` in ms, after warm-up calls, with the device synchronised."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def build(cls, config, device: torch.device, dtype: torch.dtype):
    """A random-weight model created directly on `device` in `dtype` (no CPU copy, no fp32 detour)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def bench_encoder(args, device: torch.device, proj: torch.nn.Linear) -> None:
    from transformers import HubertModel

    config = mert_to_hubert_config(MERT_330M if args.full_size else TINY_MERT)
    torch.manual_seed(0)
    base = build(HubertModel, config, device, torch.float32)
    say(
        f"encoder: HubertModel hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{sum(p.numel() for p in base.parameters()) / 1e6:.1f} M params"
    )
    for enc_dtype in (torch.float32, torch.bfloat16):
        encoder = AudioEncoder(base.to(enc_dtype), RATE, normalize=False)

        def encode(waves):
            hidden = encoder(waves)  # L x [B, T, D]
            feats = combine_and_pool(hidden, "mean", 325).to(proj.weight.dtype)
            return proj(feats)  # [B, T', H]

        for seconds in (10, 30):
            for batch in (1, 8):
                waves = torch.randn(batch, seconds * RATE, device=device)
                with torch.no_grad():
                    ms = timed(lambda w=waves: encode(w), device, args.warmup, args.iters)
                tokens = -(-encoder.frames(seconds * RATE) // 325)
                say(
                    f"  encode {str(enc_dtype).removeprefix('torch.'):8s} {seconds:2d} s clip, batch {batch}: "
                    f"{ms:9.1f} ms/batch  {ms / batch:9.1f} ms/clip  ({tokens} audio tokens/clip)"
                )
    base = encoder = None  # free the encoder before the LLM is built


def bench_decode(args, device: torch.device, proj: torch.nn.Linear, dtype: torch.dtype) -> None:
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**VICUNA_7B, **(FULL_LLM if args.full_size else TINY_LLM)})
    torch.manual_seed(1)
    llm = build(LlamaForCausalLM, config, device, dtype)
    say(
        f"LLM: LlamaForCausalLM hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"vocab {config.vocab_size}, "
        f"{sum(p.numel() for p in llm.parameters()) / 1e6:.1f} M params, {str(dtype).removeprefix('torch.')}"
    )
    # the cache keyword was renamed (past_key_values -> cache) within transformers 5
    key = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
    embed = llm.get_input_embeddings()
    ids = torch.randint(3, config.vocab_size, (1, args.prompt_tokens - 3), device=device)
    audio = proj(torch.randn(1, 3, proj.in_features, device=device, dtype=proj.weight.dtype)).to(dtype)
    prompt = torch.cat([embed(ids[:, :10]), audio, embed(ids[:, 10:])], dim=1)  # [1, ~60, H]

    def prefill():
        cache = DynamicCache(config=config)
        out = llm(inputs_embeds=prompt, use_cache=True, **{key: cache})
        return cache, out.logits[:, -1:].argmax(-1)

    def decode(steps: int):
        cache, token = prefill()
        for _ in range(steps):
            token = llm(input_ids=token, use_cache=True, **{key: cache}).logits[:, -1:].argmax(-1)

    with torch.no_grad():
        ms_prefill = timed(prefill, device, args.warmup, args.iters)
        ms_total = timed(lambda: decode(args.decode_steps), device, 1, args.iters)
    per_token = (ms_total - ms_prefill) / args.decode_steps
    say(f"  prefill {prompt.shape[1]} tokens (3 audio), batch 1: {ms_prefill:9.1f} ms")
    say(
        f"  decode step, DynamicCache, batch 1:       {per_token:9.2f} ms/token  ({1000 / per_token:.0f} tokens/s, "
        f"mean of {args.decode_steps} steps)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="MERT-v1-330M and Vicuna-7B shapes (needs a GPU)")
    parser.add_argument("--dtype", default=None, help="LLM dtype: bf16 (default on CUDA) or fp32 (default on CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=60)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda given but torch sees no CUDA device")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    say(
        f"device {name}; torch {torch.__version__}, transformers {transformers.__version__}; "
        f"{'full size' if args.full_size else 'tiny shapes'}; median of {args.iters} after {args.warmup} warm-ups"
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 encoder as users run it on Ampere+
    hidden = (FULL_LLM if args.full_size else TINY_LLM)["hidden_size"]
    enc_hidden = (MERT_330M if args.full_size else TINY_MERT)["hidden_size"]
    with torch.device(device):
        proj = torch.nn.Linear(enc_hidden, hidden).requires_grad_(False)
    start = time.perf_counter()
    bench_encoder(args, device, proj)
    bench_decode(args, device, proj, dtype)
    if device.type == "cuda":
        say(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    say(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
