"""`load_model`: what a user passes as --model / --encoder / --llm -> a ready MusiLingo.

--model may be one of our checkpoint directories, an official adapter `.pth`, or an official
full release (hub id, local directory, or the aliases short / long / musicqa). With no
--model, --encoder and --llm give a freshly initialised adapter (smoke tests, benchmarks).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from musilingo_cli.model.checkpoint import is_checkpoint, read_checkpoint, read_official_pth
from musilingo_cli.model.config import OFFICIAL_ENCODER, ModelConfig
from musilingo_cli.core.console import warn
from musilingo_cli.model.encoder import load_encoder
from musilingo_cli.core.errors import CheckpointError, ConfigError
from musilingo_cli.model.llm import load_llm, load_tokenizer, parse_dtype
from musilingo_cli.model.musilingo import MusiLingo


def load_model(model: str | None = None, encoder: str | None = None, llm: str | None = None,
               device: str = "cpu", dtype: str | torch.dtype = "fp32", encoder_dtype: str | torch.dtype = "fp32",
               with_encoder: bool = True) -> MusiLingo:
    """Build a MusiLingo from a checkpoint spec, with --encoder/--llm overriding its parts."""
    if model is not None and not is_checkpoint(model) and not str(model).endswith(".pth"):
        from musilingo_cli.model.release import load_release

        return load_release(model, encoder=encoder, llm=llm, device=device, dtype=dtype,
                            encoder_dtype=encoder_dtype, with_encoder=with_encoder)
    config, state = _config_and_state(model, encoder, llm)
    return assemble(config, state, device, dtype, encoder_dtype, with_encoder)


def _config_and_state(model: str | None, encoder: str | None, llm: str | None):
    overrides = {k: v for k, v in {"encoder": encoder, "llm": llm}.items() if v}
    if model is None:
        if not (encoder and llm):
            raise ConfigError("no model given: pass --model (a checkpoint, an official .pth, or short/long/musicqa), "
                              "or both --encoder and --llm for an untrained adapter")
        warn("no adapter weights: using a freshly initialised adapter, so answers are meaningless "
             "(fine for smoke tests and benchmarks)")
        return ModelConfig.for_stage("finetune", **overrides), None
    if is_checkpoint(model):
        config, state = read_checkpoint(model)
        return dataclasses.replace(config, **overrides), state
    if not Path(model).is_file():
        raise CheckpointError(f"{model}: no such file")
    if not llm:
        raise ConfigError(f"{model}: official .pth adapters were trained on Vicuna-7B v0; pass --llm with a merged "
                          "Vicuna-7B v0 directory, or use a full official release: --model short|long|musicqa")
    return ModelConfig.for_stage("finetune", encoder=encoder or OFFICIAL_ENCODER, llm=llm), read_official_pth(model)


def assemble(config: ModelConfig, state: dict[str, torch.Tensor] | None, device: str = "cpu",
             dtype: str | torch.dtype = "fp32", encoder_dtype: str | torch.dtype = "fp32",
             with_encoder: bool = True, llm_model: torch.nn.Module | None = None, tokenizer=None,
             encoder_model=None) -> MusiLingo:
    """Load the parts the config names (or take given ones) and the adapter weights."""
    enc = encoder_model
    if enc is None and with_encoder:
        enc = load_encoder(config.encoder, device=device, dtype=parse_dtype(encoder_dtype))
    if enc is not None and config.normalize_audio is not None:
        enc.normalize = config.normalize_audio
    lm, tok = llm_model, tokenizer
    if lm is None:
        lm, release_tok = _llm_part(config.llm, device, parse_dtype(dtype))
        tok = tok if tok is not None else release_tok
    if tok is None:
        tok = _tokenizer_part(config.tokenizer or config.llm)
    config = _with_shapes(config, enc, lm)
    model = MusiLingo(config, lm, tok, enc)
    if state is not None:
        _load_adapter(model, state, config)
    model.adapter.to(device)
    return model


# A part may itself be an official release (e.g. a checkpoint fine-tuned from `--init short`);
# load_encoder handles that itself, the LLM and tokenizer are dispatched here.
def _llm_part(name: str, device: str, dtype: torch.dtype):
    from musilingo_cli.model import release as official

    if official.is_release(name):
        lm, tok, _ = official.release_llm(name, device, dtype)
        return lm, tok
    return load_llm(name, device=device, dtype=dtype), None


def _tokenizer_part(name: str):
    from musilingo_cli.model import release as official

    if official.is_release(name):
        return official.load_release_tokenizer(official.resolve_release(name)[0])[0]
    return load_tokenizer(name)


def _with_shapes(config: ModelConfig, encoder, llm) -> ModelConfig:
    shapes = {"llm_hidden_size": llm.config.hidden_size}
    if encoder is not None:
        shapes.update(encoder_hidden_size=encoder.hidden_size, num_hidden_states=encoder.num_hidden_states)
    return dataclasses.replace(config, **shapes)


def _load_adapter(model: MusiLingo, state: dict[str, torch.Tensor], config: ModelConfig) -> None:
    expected = {k: tuple(v.shape) for k, v in model.adapter.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise CheckpointError(f"adapter weights {found} do not fit encoder {config.encoder!r} + LLM {config.llm!r} "
                              f"(expected {expected}); pass the --encoder/--llm the adapter was trained with")
    model.adapter.load_state_dict(state)
