"""Tiny, real models built from configs for tests (nothing is downloaded):

- `make_tokenizer(dir)`: a LLaMA-style tokenizer (<unk>=0, <s>=1, </s>=2, SentencePiece-like
  "▁" word boundaries) trained locally on real MusicCaps captions and the prompt strings.
- `make_llm(dir)`: a 2-layer LlamaForCausalLM saved with that tokenizer.
- `make_mert(dir)`: a tiny MERT-v1-330M-shaped HubertModel saved in MERT's own folder layout
  (config with MERT's extra keys and model_type, legacy weight_g/weight_v names, .bin weights).
- `build_model(...)`: the three parts assembled into a MusiLingo.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

CAPTIONS_CSV = Path(__file__).parent / "data" / "musiccaps_excerpt.csv"
JSON_ALPHABET = '{}[]"_'  # what a tiny tokenizer needs besides its corpus to spell JSON
PROMPT_TEXT = [
    "###Human: <Audio><AudioHere></Audio> What genre is this? ###Assistant: It is rock.###",
    "Please give a caption to the music.",
    "What is the tempo? How is the mood?",
    "Describe the audio in detail.",
    "What instruments are playing?",
]


def _corpus() -> list[str]:
    with CAPTIONS_CSV.open(newline="") as f:
        captions = [row["caption"] for row in csv.DictReader(f)]
    return captions + PROMPT_TEXT * 20


def make_tokenizer(directory: Path, vocab_size: int = 400, extra_alphabet: str = ""):
    """Train and save a byte-fallback-free BPE with LLaMA's special-token ids (`extra_alphabet`:
    characters it must spell besides the corpus's, e.g. JSON's braces and quotes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=list("#<>/:?.,!'-0123456789" + extra_alphabet),
    )
    core.train_from_iterator(_corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(directory)
    return tok


def make_llm(directory: Path, hidden: int = 64, layers: int = 2, seed: int = 0, extra_alphabet: str = ""):
    """A tiny random LLaMA with the local tokenizer, saved like any hub model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tok = make_tokenizer(directory, extra_alphabet=extra_alphabet)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a wider output spread makes greedy decoding less tie-prone
        model.lm_head.weight.normal_(0, 0.5)
    model.save_pretrained(directory)
    return directory


MERT_EXTRA = {
    "model_type": "mert_model",
    "architectures": ["MERTModel"],
    "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
    "attention_relax": 32.0,
    "deepnorm": False,
    "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336,
    "sample_rate": 24000,
}


def mert_config_dict(hidden: int = 32, layers: int = 2) -> dict:
    """MERT-v1-330M's config.json shape at toy width (real conv kernels and strides)."""
    return {
        **MERT_EXTRA,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden,
        "hidden_act": "gelu",
        "conv_dim": [16] * 7,
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": False,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "feat_proj_layer_norm": True,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "do_stable_layer_norm": True,
        "layer_norm_eps": 1e-5,
        "hidden_dropout": 0.0,
        "activation_dropout": 0.0,
        "attention_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
        "mask_time_prob": 0.075,
    }


def make_mert(directory: Path, hidden: int = 32, layers: int = 2, seed: int = 0, do_normalize: bool = False) -> Path:
    """Save a tiny random MERT in the hub's layout: config.json, preprocessor_config.json and a
    pickled pytorch_model.bin with the legacy weight-norm names."""
    from transformers import HubertModel

    from musilingo_cli.model.encoder import mert_to_hubert_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = mert_config_dict(hidden, layers)
    torch.manual_seed(seed)
    model = HubertModel(mert_to_hubert_config(config))
    with torch.no_grad():  # non-trivial norms: LayerNorm/GroupNorm weights away from 1/0
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {_legacy_name(k): v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "sampling_rate": 24000,
                "feature_size": 1,
                "padding_side": "right",
                "padding_value": 0.0,
                "return_attention_mask": True,
                "do_normalize": do_normalize,
            }
        )
    )
    return directory


def _legacy_name(key: str) -> str:
    return key.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"
    )


def build_model(
    tmp: Path,
    layer_combine: str = "mean",
    stage: str = "finetune",
    pool_window: int = 325,
    seed: int = 0,
    extra_alphabet: str = "",
):
    """A complete tiny MusiLingo (encoder + adapter + LLM) in fp32 on CPU."""
    from musilingo_cli.model.config import ModelConfig
    from musilingo_cli.model.encoder import load_encoder
    from musilingo_cli.model.llm import load_llm, load_tokenizer
    from musilingo_cli.model.musilingo import MusiLingo

    tmp = Path(tmp)
    if not (tmp / "llm" / "config.json").exists():
        make_llm(tmp / "llm", seed=seed, extra_alphabet=extra_alphabet)
        make_mert(tmp / "mert", seed=seed)
    encoder = load_encoder(str(tmp / "mert"))
    llm = load_llm(str(tmp / "llm"))
    config = ModelConfig.for_stage(
        stage,
        encoder=str(tmp / "mert"),
        llm=str(tmp / "llm"),
        layer_combine=layer_combine,
        pool_window=pool_window,
        encoder_hidden_size=encoder.hidden_size,
        llm_hidden_size=llm.config.hidden_size,
        num_hidden_states=encoder.num_hidden_states,
    )
    torch.manual_seed(seed + 1)
    return MusiLingo(config, llm, load_tokenizer(str(tmp / "llm")), encoder)
