"""The one loader: what a user typed after --model, --init, --encoder or --llm -> the parts.

A spec is, checked in this order:

    checkpoint   our checkpoint directory (musilingo.json + adapter.safetensors)
    pth          an official adapter-only `checkpoint_N.pth` (trained on Vicuna-7B v0)
    release      an official full release: short / long / musicqa, m-a-p/MusiLingo-*, or a local copy
    named        (--encoder only) a registered pretrained encoder, e.g. musicnn-msd (named_encoders.py)
    plain        (--encoder / --llm only) a hub id or local directory of an encoder or an LLM

`read_adapter` answers --model and --init (a ModelConfig naming the parts, and the adapter
tensors); `encoder_info`, `load_encoder_part`, `load_llm_part` and `load_tokenizer_part` answer
for each part, whether it is plain or lives inside a release. Nothing else in the package decides
what a spec is: release.py returns tensors and configs only, and encoder.py / llm.py know plain
models only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch

from musilingo_cli.core.console import warn
from musilingo_cli.core.errors import CheckpointError, ConfigError
from musilingo_cli.model import release
from musilingo_cli.model.checkpoint import is_checkpoint, read_checkpoint, read_official_pth, save_checkpoint
from musilingo_cli.model.config import OFFICIAL_ENCODER, OFFICIAL_LLM, EncoderInfo, ModelConfig
from musilingo_cli.model.encoder import AudioEncoder, describe_encoder, load_encoder, mert_to_hubert_config
from musilingo_cli.model.llm import freeze, load_llm, load_tokenizer, parse_dtype
from musilingo_cli.model.lora import merge_lora
from musilingo_cli.model.musilingo import MusiLingo
from musilingo_cli.model.named_encoders import load_named_encoder, named_encoder

SpecKind = Literal["checkpoint", "pth", "release", "plain"]


def spec_kind(spec: str) -> SpecKind:
    """Which of the four kinds `spec` is (no weights are read; a release may be looked up on the hub)."""
    if is_checkpoint(spec):
        return "checkpoint"
    if str(spec).endswith(".pth"):
        return "pth"
    if release.is_release(spec):
        return "release"
    return "plain"


def read_adapter(spec: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """--model / --init -> (ModelConfig naming the encoder, LLM and tokenizer, adapter state).

    An official .pth names MERT-v1-330M and Vicuna-7B v1.5 (the caller may override the LLM; the
    .pth was trained on v0). Raises CheckpointError for a missing file or anything else."""
    kind = spec_kind(spec)
    if kind == "checkpoint":
        return read_checkpoint(spec)
    if kind == "pth":
        if not Path(spec).is_file():
            raise CheckpointError(f"{spec}: no such file")
        config = ModelConfig.for_stage("finetune", encoder=OFFICIAL_ENCODER, llm=OFFICIAL_LLM)
        return config, read_official_pth(spec)
    if not Path(spec).expanduser().exists() and str(spec).count("/") != 1 and spec not in release.ALIASES:
        raise CheckpointError(
            f"{spec}: no such checkpoint folder or .pth file, and not an official release "
            "(short, long, musicqa, or a hub id such as m-a-p/MusiLingo-short-v1)"
        )
    # anything else can only be a release: opening it says precisely what is missing or wrong
    opened = release.open_release(spec)
    return release.release_config(opened), release.adapter_state(opened)


def with_parts(config: ModelConfig, encoder: str | None, llm: str | None) -> ModelConfig:
    """`config` with --encoder / --llm replacing its parts; a new LLM brings its own tokenizer."""
    changes = {k: v for k, v in {"encoder": encoder, "llm": llm}.items() if v}
    if llm:
        changes["tokenizer"] = None
    return dataclasses.replace(config, **changes)


# --- the parts ---------------------------------------------------------------------------------


def encoder_info(spec: str) -> EncoderInfo:
    """Rate, normalisation, shapes and pooling window of an encoder spec (plain, named, or a
    release's MERT); no weights are read."""
    if release.is_release(spec):
        return release.release_encoder_info(release.open_release(spec))
    if named := named_encoder(spec):
        return EncoderInfo(
            named.sample_rate, named.normalize, named.hidden_size, named.num_hidden_states, named.pool_window
        )
    return describe_encoder(spec)


def load_encoder_part(
    spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AudioEncoder:
    """A frozen encoder (waves [B, S] -> L x [B, T, D]) from a plain or named encoder spec, or the
    MERT inside a release."""
    if named := named_encoder(spec):
        return load_named_encoder(named, device, dtype)
    if not release.is_release(spec):
        return load_encoder(spec, device=device, dtype=dtype)
    opened = release.open_release(spec)
    return build_release_encoder(
        opened.read("encoder", device, dtype), device, dtype, release.release_normalize(opened.directory)
    )


def load_llm_part(spec: str, device: str | torch.device, dtype: torch.dtype, quantize: str | None = None):
    """(frozen causal LM, tokenizer or None) from a plain LLM spec or the Vicuna inside a release;
    `quantize` (8bit | 4bit, bitsandbytes) only for a plain LLM folder or hub id."""
    if not release.is_release(spec):
        return load_llm(spec, device=device, dtype=dtype, quantize=quantize), None
    if quantize:
        raise ConfigError(
            f"--quantize works with a plain LLM folder; {spec} is an official release: pass "
            "--llm lmsys/vicuna-7b-v1.5 (or a saved Vicuna folder) with it"
        )
    opened = release.open_release(spec)
    lm = build_release_llm(opened.read("llm", device, dtype), device, opened.head_dim_hint())
    return lm, release.load_release_tokenizer(opened.directory)[0]


def load_tokenizer_part(spec: str):
    """The tokenizer of a plain LLM spec or of a release (repaired to LLaMA's special ids)."""
    if release.is_release(spec):
        return release.load_release_tokenizer(release.resolve_release(spec)[0])[0]
    return load_tokenizer(spec)


def build_release_encoder(state: dict[str, torch.Tensor], device, dtype: torch.dtype, normalize: bool) -> AudioEncoder:
    """MERT tensors -> AudioEncoder (a stock HubertModel created on meta, tensors assigned: held once)."""
    from transformers import HubertModel

    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    with torch.device("meta"):
        model = HubertModel(mert_to_hubert_config(release.mert_config_from(state)))
    _assign(model, state, "MERT encoder")
    return AudioEncoder(model, release.MERT_RATE, normalize)


def build_release_llm(state: dict[str, torch.Tensor], device, head_dim: int | None = None):
    """Vicuna tensors (already on device, in their dtype) -> frozen LlamaForCausalLM."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = release.llama_config_from(state, head_dim)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    _assign(model, state, "LLM", rebuild={"model.rotary_emb": lambda: LlamaRotaryEmbedding(config)}, device=device)
    return freeze(model)


def _assign(model: torch.nn.Module, state: dict, what: str, rebuild: dict | None = None, device="cpu") -> None:
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"the release's {what} does not match the expected architecture: {' '.join(str(err).split())[:300]}"
        ) from None
    for name, make in (rebuild or {}).items():  # non-persistent buffers are not in any state dict
        parent, _, child = name.rpartition(".")
        with torch.device(device):
            setattr(model.get_submodule(parent), child, make())
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"the release's {what} leaves {len(left)} tensors unset (e.g. {left[0]})")


# --- a whole model ------------------------------------------------------------------------------


def load_model(
    model: str | None = None,
    encoder: str | None = None,
    llm: str | None = None,
    device: str = "cpu",
    dtype: str | torch.dtype = "fp32",
    encoder_dtype: str | torch.dtype = "fp32",
    with_encoder: bool = True,
    quantize: str | None = None,
) -> MusiLingo:
    """A ready MusiLingo from a --model spec, --encoder/--llm replacing its parts. With no --model,
    --encoder and --llm give a freshly initialised adapter (smoke tests, benchmarks).
    Raises ConfigError / CheckpointError with one line saying what to pass instead."""
    if model is None:
        if not (encoder and llm):
            raise ConfigError(
                "no model given: pass --model (a checkpoint, an official .pth, or short/long/musicqa), "
                "or both --encoder and --llm for an untrained adapter"
            )
        warn(
            "no adapter weights: using a freshly initialised adapter, so answers are meaningless "
            "(fine for smoke tests and benchmarks)"
        )
        fresh = ModelConfig.for_stage(
            "finetune", encoder=encoder, llm=llm, pool_window=encoder_info(encoder).pool_window
        )
        return assemble(fresh, None, device, dtype, encoder_dtype, with_encoder, quantize=quantize)
    if spec_kind(model) == "pth" and not llm:
        raise ConfigError(
            f"{model}: official .pth adapters were trained on Vicuna-7B v0; pass --llm with a merged "
            "Vicuna-7B v0 directory, or use a full official release: --model short|long|musicqa"
        )
    config, state = read_adapter(model)
    return assemble(
        with_parts(config, encoder, llm), state, device, dtype, encoder_dtype, with_encoder, quantize=quantize
    )


def assemble(
    config: ModelConfig,
    state: dict[str, torch.Tensor] | None,
    device: str = "cpu",
    dtype: str | torch.dtype = "fp32",
    encoder_dtype: str | torch.dtype = "fp32",
    with_encoder: bool = True,
    llm_model: torch.nn.Module | None = None,
    tokenizer=None,
    quantize: str | None = None,
) -> MusiLingo:
    """Load the parts `config` names (the LLM and tokenizer may be given already loaded, as
    training does; then `config.lora` is not applied) and the adapter weights; `quantize` (8bit |
    4bit) loads the LLM through bitsandbytes, the encoder stays in `encoder_dtype`. Without the
    encoder, its shapes come from its config."""
    enc = load_encoder_part(config.encoder, device, parse_dtype(encoder_dtype)) if with_encoder else None
    if enc is not None and config.normalize_audio is not None:
        enc.normalize = config.normalize_audio
    lm, tok = llm_model, tokenizer
    if lm is None:
        lm, part_tok = load_llm_part(config.llm, device, parse_dtype(dtype), quantize)
        tok = tok if tok is not None else part_tok
        if config.lora:  # LoRA weights trained with the adapter (train --lora), merged in
            lm = merge_lora(lm, config.lora)
    if tok is None:
        tok = load_tokenizer_part(config.tokenizer or config.llm)
    model = MusiLingo(_with_shapes(config, enc, lm), lm, tok, enc)
    if state is not None:
        _load_adapter(model, state, model.config)
    model.adapter.to(device)
    return model


def _with_shapes(config: ModelConfig, encoder: AudioEncoder | None, llm) -> ModelConfig:
    info = encoder or encoder_info(config.encoder)
    shapes = {
        "llm_hidden_size": llm.config.hidden_size,
        "encoder_hidden_size": info.hidden_size,
        "num_hidden_states": info.num_hidden_states,
    }
    return dataclasses.replace(config, **shapes)


def _load_adapter(model: MusiLingo, state: dict[str, torch.Tensor], config: ModelConfig) -> None:
    expected = {k: tuple(v.shape) for k, v in model.adapter.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise CheckpointError(
            f"adapter weights {found} do not fit encoder {config.encoder!r} + LLM {config.llm!r} "
            f"(expected {expected}); pass the --encoder/--llm the adapter was trained with"
        )
    model.adapter.load_state_dict(state)


def export_release(spec: str, out_dir: str | Path) -> Path:
    """Convert an official release into our format: the adapter checkpoint plus `encoder/`
    (HubertModel) and `llm/` (LlamaForCausalLM + tokenizer) saved with save_pretrained;
    musilingo.json names them relative to the checkpoint directory. Weights keep the release's
    dtype; one part is in memory at a time."""
    import json

    out = Path(out_dir)
    opened = release.open_release(spec)
    enc = build_release_encoder(
        opened.read("encoder"), "cpu", torch.float32, release.release_normalize(opened.directory)
    )
    enc.model.save_pretrained(out / "encoder")
    (out / "encoder" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "sampling_rate": enc.sample_rate,
                "feature_size": 1,
                "padding_side": "right",
                "padding_value": 0.0,
                "return_attention_mask": True,
                "do_normalize": enc.normalize,
            }
        )
    )
    shapes = {"encoder_hidden_size": enc.hidden_size, "num_hidden_states": enc.num_hidden_states}
    del enc
    lm = build_release_llm(opened.read("llm"), "cpu", opened.head_dim_hint())
    lm.save_pretrained(out / "llm")  # in the release's dtype (no cast was asked for)
    shapes["llm_hidden_size"] = lm.config.hidden_size
    del lm
    release.load_release_tokenizer(opened.directory)[0].save_pretrained(out / "llm")
    config = ModelConfig.for_stage("finetune", encoder="encoder", llm="llm", **shapes)
    return save_checkpoint(out, config, release.adapter_state(opened), training={"converted_from": opened.spec})
