"""Benchmark `ask --json-schema`: ms per new token with and without the xgrammar constraint, in one run.

    .venv/bin/python benchmarks/bench_json.py                       # the tests' tiny Llama (vocab 400)
    .venv/bin/python benchmarks/bench_json.py --llm DIR             # any causal LM folder (e.g. SmolLM2-135M)
    python benchmarks/bench_json.py --llm /tmp/bench-quantize/full/llm --schema tags --device cuda   # 7B shape
                                                                    # (written by bench_quantize.py)
    python benchmarks/bench_json.py --llm DIR --device cuda         # on a GPU (CUDA-graph step)

Our decoding loop (model/decoding.py) generates from random audio embeddings. The constrained run
is the catalogue schema (or --schema FILE) and ends when the object closes; the free run then
generates exactly as many tokens (min_new_tokens = max_new_tokens, no stop string), so both
divide the same prefill + N steps by N. The difference is the per-token host work: filling
each row's bitmask (xgrammar), applying it to the logits and advancing the matchers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", help="a causal LM folder (default: the tests' tiny Llama, tiny schema)")
    parser.add_argument(
        "--schema", help="a JSON Schema file, catalogue, or tags (the tests' space-free one; default without --llm)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from musilingo_cli.model.decoding import Decoder
    from musilingo_cli.model.generation import GenerationSettings
    from musilingo_cli.model.llm import load_llm, load_tokenizer
    from musilingo_cli.model.structured import JsonGrammar, read_schema

    tmp = Path(tempfile.mkdtemp())
    if args.llm:
        llm_dir, schema_spec = args.llm, args.schema or "catalogue"
    else:
        from model_helpers import JSON_ALPHABET, make_llm

        llm_dir = str(make_llm(tmp / "llm", extra_alphabet=JSON_ALPHABET))
        schema_spec = args.schema or "tags"
    if schema_spec == "tags":  # the tests' space-free schema: the tests' tokenizer spells it
        from test_structured import TAGS

        schema_spec = str(tmp / "tags.schema.json")
        Path(schema_spec).write_text(json.dumps(TAGS))
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    llm, tok = load_llm(llm_dir, args.device, dtype), load_tokenizer(llm_dir)
    schema = read_schema(schema_spec)
    eos = [tok.eos_token_id]
    started = time.perf_counter()
    grammar = JsonGrammar(tok, llm.get_output_embeddings().weight.shape[0], eos, schema)
    print(
        f"LLM {llm_dir} ({sum(p.numel() for p in llm.parameters()) / 1e6:.1f} M, vocab "
        f"{grammar.vocab_size}), {args.device}; schema {schema_spec} compiled in "
        f"{time.perf_counter() - started:.2f} s",
        flush=True,
    )
    mode = "graph" if args.device.startswith("cuda") else "eager"
    decoder = Decoder(llm, mode)
    hidden = llm.config.hidden_size
    for batch in args.batch:
        torch.manual_seed(0)
        embeds = torch.randn(batch, 24, hidden, device=args.device, dtype=dtype) * 0.02
        mask = torch.ones(batch, 24, dtype=torch.long)

        limit = [400]  # the first run finds the answer's length; timed runs use it, so both caches are as long

        def constrained():
            s = GenerationSettings.from_preset("greedy", max_new_tokens=limit[0], json_schema=schema)
            return decoder.generate(embeds, mask, s, eos, tok.pad_token_id, None, grammar.start(batch))

        def timed(fn):
            best = float("inf")
            for _ in range(args.repeats):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = fn()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            return best, out

        limit[0] = constrained().shape[1]  # warm-up (and the CUDA graph capture)
        t_json, out = timed(constrained)
        n = out.shape[1]
        free_settings = GenerationSettings.from_preset("greedy", max_new_tokens=n, min_new_tokens=n)
        free = lambda: decoder.generate(embeds, mask, free_settings, eos, tok.pad_token_id, None)  # noqa: E731
        free()
        t_free, _ = timed(free)
        print(
            f"batch {batch:3d}: {n} tokens  free {1000 * t_free / n:7.3f} ms/token  "
            f"json {1000 * t_json / n:7.3f} ms/token  (x{t_json / t_free:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
