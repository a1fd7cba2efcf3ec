"""Training throughput: encoder in the loop vs. from cached features, and the LLM step's FLOP rate.

    python benchmarks/bench_train.py                       # tiny models on CPU (seconds)
    python benchmarks/bench_train.py --device cuda --full-size [--quick]
                                                           # MERT-330M + 7B Llama shapes, random weights

What one training step is here: the MusiLingo loss (adapter -> frozen LLM, bf16 on GPU) on a
micro-batch, backward to the adapter, and an AdamW step on the adapter. Pretraining shapes:
30.5 s clips (7 audio tokens) and 40 caption tokens, so about 48 tokens per row.
  (a) encoder in the loop: MERT forward on the raw clips + (b)
  (b) from the cache: the same step from stored [7, 1024] features (no encoder)
FLOPs counted for the LLM step: 4 x N x tokens, N = LLM parameters without the embedding table
(forward 2N; the backward of a frozen LLM computes input gradients only, another 2N; attention
scores, about 1% at 48 tokens, are not counted). Peak: a measured 8192^3 bf16 matmul.
The step uses plain torch AdamW on the adapter: DeepSpeed adds only ZeRO bookkeeping on the
adapter's 4M parameters (the train loop is otherwise the same code path: MusiLingo.forward).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from musilingo_cli.model.config import ModelConfig  # noqa: E402
from musilingo_cli.model.encoder import AudioEncoder, mert_to_hubert_config  # noqa: E402
from musilingo_cli.model.musilingo import MusiLingo  # noqa: E402

CAPTION = (
    "A mellow acoustic guitar plays a slow folk melody with soft female vocals, a gentle piano and light "
    "percussion in the background; the mood is calm and nostalgic, like a quiet evening at home."
)


def log(*parts) -> None:
    print(*parts, flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, warmup: int, iters: int) -> float:
    """Seconds per call (mean over `iters` after `warmup`)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def matmul_peak(device: str, quick: bool) -> float:
    """Measured TFLOP/s of a square matmul (bf16 8192^3 on GPU, fp32 1024^3 on CPU)."""
    n, dtype = (8192, torch.bfloat16) if device.startswith("cuda") else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, 3, 5 if quick else 10)
    return 2 * n**3 / seconds / 1e12


def build(device: str, full_size: bool, tmp: Path) -> MusiLingo:
    """MERT + Llama with random weights (full size: MERT-v1-330M and a 7B Llama), tiny tokenizer."""
    from model_helpers import make_tokenizer
    from shapes import llama_config, mert_config
    from transformers import HubertModel, LlamaForCausalLM

    tok = make_tokenizer(tmp / "tok")
    tok.pad_token = tok.eos_token
    mert, llm_cfg = mert_config(full_size), llama_config(full_size, len(tok))
    llm_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        encoder_model = HubertModel(mert_to_hubert_config(mert))
        llm = LlamaForCausalLM(llm_cfg).to(llm_dtype)
    llm.eval().requires_grad_(False)
    encoder = AudioEncoder(encoder_model, 24000, normalize=True)
    config = ModelConfig.for_stage(
        "pretrain",
        encoder="random",
        llm="random",
        max_txt_len=40,
        encoder_hidden_size=encoder.hidden_size,
        llm_hidden_size=llm_cfg.hidden_size,
        num_hidden_states=encoder.num_hidden_states,
    )
    model = MusiLingo(config, llm, tok, encoder)
    model.adapter.to(device)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full-size", action="store_true", help="MERT-330M + 7B Llama shapes (GPU)")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps, batch 8 and 32 only")
    parser.add_argument("--batches", default=None, help="comma-separated micro-batch sizes (default 8,32[,64])")
    parser.add_argument("--encoder-dtype", default=None, help="fp32 or bf16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the LLM (one compile per batch size)")
    parser.add_argument("--seconds", type=float, default=30.5, help="clip length (30.5 s = MSD pretraining crop)")
    args = parser.parse_args()
    device = args.device
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    batches = [int(b) for b in (args.batches or ("8,32" if args.quick or not args.full_size else "8,32,64")).split(",")]
    warmup, iters = (2, 4) if args.quick else (3, 8)
    torch.manual_seed(0)
    import tempfile

    log(
        f"device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
        + f", torch {torch.__version__}, {'full-size' if args.full_size else 'tiny'} models"
    )
    peak = matmul_peak(device, args.quick)
    log(f"measured matmul peak: {peak:.4g} TFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = build(device, args.full_size, Path(tmp))
        log(f"built models in {time.perf_counter() - t0:.1f} s")
    if args.compile:
        model.llm = torch.compile(model.llm)
    enc_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[
        args.encoder_dtype or ("bf16" if device.startswith("cuda") else "fp32")
    ]
    model.encoder.model.to(enc_dtype)
    n_llm = sum(p.numel() for p in model.llm.parameters()) - model.llm.get_input_embeddings().weight.numel()
    optimizer = torch.optim.AdamW(model.adapter.parameters(), lr=1e-4, weight_decay=0.05)
    samples = int(args.seconds * 24000)
    log(
        f"LLM matmul parameters {n_llm / 1e9:.2f} B; clip {args.seconds} s ({samples} samples); "
        f"encoder {str(enc_dtype).split('.')[-1]}"
    )
    rows = []
    for batch in batches:
        try:
            waves = torch.randn(batch, samples, device=device) * 0.1
            feats = model.encode(waves)  # [B, T', D]
            features = [f for f in feats]
            answers = [CAPTION] * batch
            tokens = int(model.build_batch(features, [None] * batch, answers).attention_mask.sum())

            def llm_step():
                loss = model(features, [None] * batch, answers)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            def encoder_only():
                model.encode(waves)

            def full_step():
                fresh = model.encode(waves)
                loss = model([f for f in fresh], [None] * batch, answers)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            t_llm = timed(llm_step, device, warmup, iters)
            t_enc = timed(encoder_only, device, warmup, iters)
            t_full = timed(full_step, device, warmup, iters)
        except torch.OutOfMemoryError:
            log(f"batch {batch}: out of memory, skipped")
            torch.cuda.empty_cache()
            continue
        tflops = 4 * n_llm * tokens / t_llm / 1e12
        rows.append(
            (batch, tokens / batch, batch / t_full, batch / t_llm, batch / t_enc, tflops, tflops / peak, t_enc / t_full)
        )
        log(
            f"batch {batch:3d} ({tokens / batch:.0f} tokens/row, {feats.shape[1]} audio tokens): "
            f"encoder-in-loop {batch / t_full:8.1f} samples/s | cached {batch / t_llm:8.1f} samples/s "
            f"(x{t_full / t_llm:.2f}) | encoder alone {batch / t_enc:8.1f} clips/s ({t_enc / t_full:.0%} of the "
            f"in-loop step) | LLM step {tflops:.4g} TFLOP/s = {tflops / peak:.0%} of matmul peak"
        )
        waves = feats = features = None  # free before the next batch size
    if rows:
        best = max(rows, key=lambda r: r[3])
        log(
            f"summary: best cached {best[3]:.1f} samples/s at batch {best[0]} vs encoder-in-loop {best[2]:.1f} "
            f"(x{best[3] / best[2]:.2f}); LLM step {best[5]:.4g} TFLOP/s = {best[6]:.0%} of the measured peak"
        )


if __name__ == "__main__":
    main()
