"""The frozen audio encoder: MERT-v1 as a stock transformers HubertModel (no remote code), or
any transformers audio model that returns hidden states per layer.

MERT-v1 checkpoints are plain HuBERT with identical key names; only the config must be
rebuilt from a whitelist (see docs/model.md). Clips are encoded unpadded: MERT's group norm
makes a zero-padded clip differ from the same clip alone, so batches hold equal lengths only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from musilingo_cli.core.errors import CheckpointError, ConfigError
from musilingo_cli.model.config import EncoderInfo
from musilingo_cli.model.hub import resolve_dir

ENCODER_FILES = ["config.json", "preprocessor_config.json", "*.safetensors", "pytorch_model.bin"]

# HubertConfig keys MERT's config shares with HuBERT; MERT-only keys (attention_relax, cqt,
# deepnorm, sample_rate, auto_map) are inert in the HuBERT code path and are dropped.
_HUBERT_KEYS = (
    "hidden_size num_hidden_layers num_attention_heads intermediate_size hidden_act conv_dim conv_kernel "
    "conv_stride conv_bias feat_extract_norm feat_extract_activation feat_proj_layer_norm "
    "num_conv_pos_embeddings num_conv_pos_embedding_groups do_stable_layer_norm layer_norm_eps "
    "hidden_dropout activation_dropout attention_dropout feat_proj_dropout final_dropout layerdrop "
    "mask_time_prob mask_time_length mask_time_min_masks initializer_range"
).split()


def mert_to_hubert_config(mert: dict):
    """A HubertConfig that builds exactly MERT-v1's modules from MERT's config.json."""
    from transformers import HubertConfig

    kwargs = {k: mert[k] for k in _HUBERT_KEYS if k in mert}
    kwargs["conv_pos_batch_norm"] = False
    # masked_spec_embed must exist for strict loading; masking itself never runs in eval
    kwargs["mask_time_prob"] = kwargs.get("mask_time_prob") or 0.05
    # transformers >= 5.16 would otherwise return the pre-final-LayerNorm tensor as the last state
    kwargs["tie_last_hidden_states"] = True
    return HubertConfig(**kwargs)


class AudioEncoder(nn.Module):
    """Waveforms [B, S] at `sample_rate` -> all hidden states, L x [B, T, D]. Always frozen and
    in eval mode (the official training left MERT in train mode; we do not copy that).

    `model` is any transformers audio model whose forward takes `input_values` and returns
    `hidden_states`; `sample_rate` (Hz) and `normalize` come from its preprocessor config."""

    def __init__(self, model: nn.Module, sample_rate: int, normalize: bool):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.sample_rate = sample_rate
        self.normalize = normalize
        self.hidden_size = model.config.hidden_size
        self.num_hidden_states = model.config.num_hidden_layers + 1

    def train(self, mode: bool = True) -> AudioEncoder:
        """Stay in eval mode whatever the parent module does: SpecAugment masking stays off."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.normalize:  # Wav2Vec2FeatureExtractor's per-clip normalisation
            waves = (waves - waves.mean(-1, keepdim=True)) / torch.sqrt(
                waves.var(-1, keepdim=True, unbiased=False) + 1e-7
            )
        # the conv front end takes the waveform (a buffer-like parameter such as masked_spec_embed may sit elsewhere)
        front = getattr(self.model, "feature_extractor", self.model)
        param = next(front.parameters())
        out = self.model(input_values=waves.to(param.device, param.dtype), output_hidden_states=True)
        return tuple(out.hidden_states)

    def frames(self, num_samples: int) -> int:
        """Encoder frames for a clip of `num_samples` samples."""
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(num_samples)))


def describe_encoder(name_or_path: str) -> EncoderInfo:
    """Rate, normalisation and shapes from the encoder's config files (no weights are read).
    `name_or_path` is a hub id or a local directory of a plain encoder (loader.encoder_info
    also takes official releases)."""
    directory = resolve_dir(name_or_path, "audio encoder", ENCODER_FILES)
    config = _read_json(directory / "config.json", required=True)
    _refuse_language_model(config, directory)
    rate, normalize = _preprocessing(directory, config)
    return EncoderInfo(rate, normalize, config["hidden_size"], config["num_hidden_layers"] + 1)


def load_encoder(
    name_or_path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AudioEncoder:
    """Load MERT (hub id or local directory) as HubertModel, or any transformers audio model.
    Raises CheckpointError when config and weights disagree or files are missing."""
    directory = resolve_dir(name_or_path, "audio encoder", ENCODER_FILES)
    config_dict = _read_json(directory / "config.json", required=True)
    _refuse_language_model(config_dict, directory)
    model = _build(config_dict, directory)
    try:
        model.load_state_dict(_read_weights(directory), strict=True)
    except RuntimeError as err:  # missing / unexpected / mis-shaped keys: weights and config disagree
        detail = " ".join(str(err).split())
        raise CheckpointError(f"{directory}: weights do not fit config.json ({detail[:300]})") from None
    rate, normalize = _preprocessing(directory, config_dict)
    return AudioEncoder(model.to(device=device, dtype=dtype), rate, normalize)


def _refuse_language_model(config_dict: dict, directory: Path) -> None:
    """A causal LM given as the encoder (--encoder and --llm swapped) is named as such (CheckpointError),
    not reported later as weights that do not fit."""
    language_models = [a for a in config_dict.get("architectures") or [] if a.endswith(("ForCausalLM", "LMHeadModel"))]
    if language_models:
        raise CheckpointError(
            f"{directory} is a language model ({language_models[0]}), not an audio encoder: "
            "did you swap --encoder and --llm?"
        )


def _build(config_dict: dict, directory: Path) -> nn.Module:
    from transformers import AutoConfig, AutoModel, HubertModel

    is_mert = config_dict.get("model_type") == "mert_model" or "MERTModel" in config_dict.get("architectures", [])
    if is_mert:
        return HubertModel(mert_to_hubert_config(config_dict))
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except (ValueError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{directory}/config.json: model type {config_dict.get('model_type')!r} is unknown to "
            f"transformers ({reason})"
        ) from None
    config.layerdrop = 0.0  # a dropped layer changes how many hidden states come back
    config.tie_last_hidden_states = True  # pre-LN encoders: last state after the final LayerNorm
    return AutoModel.from_config(config)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    shards = sorted(directory.glob("*.safetensors"))
    if shards:
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(shard))
        return state
    binary = directory / "pytorch_model.bin"
    if binary.exists():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise CheckpointError(f"no weights in {directory}: expected *.safetensors or pytorch_model.bin")


def _preprocessing(directory: Path, config_dict: dict) -> tuple[int, bool]:
    """Sampling rate and do_normalize as the encoder's own preprocessor_config.json says."""
    pre = _read_json(directory / "preprocessor_config.json", required=False)
    rate = pre.get("sampling_rate") or config_dict.get("sample_rate") or 16000
    return int(rate), bool(pre.get("do_normalize", False))


def _read_json(path: Path, required: bool) -> dict:
    if not path.exists():
        if required:
            raise CheckpointError(f"{path} is missing: an encoder directory needs config.json and its weights")
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg})") from None


def waves_to_tensor(waves: list[np.ndarray]) -> torch.Tensor:
    """Stack equal-length clips into [B, S]; unequal lengths are refused (padding would change
    MERT's features through its group norm)."""
    lengths = {len(w) for w in waves}
    if len(lengths) != 1:
        raise ConfigError(f"clips in one encoder batch must have equal lengths, got {sorted(lengths)}")
    return torch.from_numpy(np.stack(waves).astype(np.float32, copy=False))
