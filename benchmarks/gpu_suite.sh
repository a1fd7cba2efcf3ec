#!/usr/bin/env bash
# One device run for every GPU benchmark (the lent GPU time is short): gpu tests, core, train, ask, serve,
# quantize, json.
# Usage on a GPU machine from the repo root:
#   bash benchmarks/gpu_suite.sh [gputest] [core] [train] [ask] [askjob] [serve] [quantize] [json]
# (gputest: the `gpu`-marked tests, CUDA-graph decoding == eager, live batch on CUDA == alone; askjob: the ask
# job alone; serve: issue 13's targets, 256 concurrent clients vs ask over the same 1,024 clips and time to first
# token at one client vs the encoder's time + 50 ms. serve needs fastapi, uvicorn and openai: where the image lacks
# them, `pip download -d .whl --only-binary=:all: --python-version 3.X fastapi uvicorn openai` here and carry .whl;
# quantize: ask's peak memory, ms/token at batch 1 and clips/s at batch 64 for the 7B LLM in bf16 / 8bit / 4bit,
# about 8 minutes and 15 GB of disk; json: ms/token with and without the JSON-schema constraint, tiny LLM and the
# 7B shape)
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then  # wheels the GPU image lacks (soundfile, soxr, cffi)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
OUT="${OUT:-/tmp/bench-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
want="${*:-gputest core train ask serve}"
for b in $want; do
  case $b in
    gputest) timeout 300 python3 -m pytest -q -o addopts="" -p no:cacheprovider -m gpu tests/test_gpu_decoding.py tests/test_live_batch.py 2>&1 | tee "$OUT/gpu_tests.txt" ;;
    core)  timeout 150 python3 benchmarks/bench_core.py --device cuda --full-size 2>&1 | tee "$OUT/bench_core.txt" ;;
    train) timeout 200 python3 benchmarks/bench_train.py --device cuda --full-size --quick --batches 8,32 2>&1 | tee "$OUT/bench_train.txt" ;;
    ask)   timeout 400 python3 benchmarks/bench_ask.py --device cuda --full-size 2>&1 | tee "$OUT/bench_ask.txt" ;;
    askjob) timeout 200 python3 benchmarks/bench_ask.py --device cuda --full-size --only-job --encoder-batch-size 64 2>&1 | tee "$OUT/bench_askjob.txt" ;;
    quantize) timeout 590 python3 benchmarks/bench_quantize.py --device cuda 2>&1 | tee "$OUT/bench_quantize.txt" ;;
    json)  { timeout 60 python3 benchmarks/bench_json.py --device cuda --batch 1 8 64
             timeout 150 python3 benchmarks/bench_quantize.py --device cuda --prepare-only \
               && timeout 200 python3 benchmarks/bench_json.py --device cuda --llm /tmp/bench-quantize/full/llm --schema tags --batch 1 8 64
           } 2>&1 | tee "$OUT/bench_json.txt" ;;
    serve)
      if python3 -c 'import fastapi, uvicorn, openai' 2>"$OUT/serve_imports.txt"; then
        timeout 540 python3 benchmarks/bench_serve.py --device cuda --full-size --clients 256 --clips 1024 --alone 8 --rounds 2 2>&1 | tee "$OUT/bench_serve.txt"
      else
        echo "serve: skipped, $(tail -n1 "$OUT/serve_imports.txt") (carry wheels in .whl, see the header)" | tee "$OUT/bench_serve.txt"
      fi ;;
  esac
done
