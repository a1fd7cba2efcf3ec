"""The MERT mapping test: MERT-v1 checkpoints in their hub layout load strictly into a stock
HubertModel (no remote code), with the hidden states MERT's own code gives on this transformers
version; any other transformers audio model with per-layer hidden states can stand in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import make_mert, mert_config_dict

from musilingo_cli.core.errors import CheckpointError, ConfigError
from musilingo_cli.model.encoder import load_encoder, waves_to_tensor

PACKAGE = Path(__file__).resolve().parent.parent / "musilingo_cli"


def clip(seconds: float = 1.0, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(24000 * seconds)) / 24000
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size) + 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def mert_dir(tmp_path_factory) -> Path:
    return make_mert(tmp_path_factory.mktemp("mert"), hidden=32, layers=3, seed=1)


def test_mert_layout_loads_strictly_with_final_layernorm_last(mert_dir):
    enc = load_encoder(str(mert_dir))
    assert type(enc.model).__name__ == "HubertModel" and enc.sample_rate == 24000
    saved = torch.load(mert_dir / "pytorch_model.bin", weights_only=True)
    assert any(k.endswith("weight_g") for k in saved)  # MERT's legacy weight-norm names
    assert len(saved) == 16 * 3 + 19 == len(enc.model.state_dict())
    seen = []  # what enters the final encoder LayerNorm: the raw residual stream of the last layer
    enc.model.encoder.layer_norm.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    waves = waves_to_tensor([clip()])
    hidden = enc(waves)
    assert len(hidden) == 3 + 1 == enc.num_hidden_states
    # pre-LN (330M-style): the last state must be the final LayerNorm's output, as MERT's code gives
    # (transformers >= 5.16 returns the raw stream unless tie_last_hidden_states is set)
    assert torch.equal(hidden[-1], enc.model.encoder.layer_norm(seen[0]))
    assert not torch.allclose(hidden[-1], seen[0], atol=1e-3)
    assert torch.equal(hidden[-1], enc.model(input_values=waves).last_hidden_state)


def test_95m_like_post_ln_config_loads(tmp_path):
    make_mert(tmp_path, hidden=32, layers=2, seed=2)
    pre = load_encoder(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({**config, "do_stable_layer_norm": False, "attention_relax": -1.0})
    )
    post = load_encoder(str(tmp_path))
    assert type(post.model.encoder).__name__ == "HubertEncoder"
    assert type(pre.model.encoder).__name__ == "HubertEncoderStableLayerNorm"
    waves = waves_to_tensor([clip()])
    hidden = post(waves)
    assert len(hidden) == 3
    assert torch.equal(hidden[-1], post.model(input_values=waves).last_hidden_state)
    assert not torch.allclose(hidden[-1], pre(waves)[-1])


def test_do_normalize_is_read_from_preprocessor_config(tmp_path):
    plain = load_encoder(str(make_mert(tmp_path / "a", seed=3, do_normalize=False)))
    normed = load_encoder(str(make_mert(tmp_path / "b", seed=3, do_normalize=True)))
    assert (plain.normalize, normed.normalize) == (False, True)
    # MERT's first conv has no bias and a per-channel GroupNorm, so it is blind to a clip's offset
    # and scale except through the norm's eps: a quiet clip makes the eps (and so do_normalize) count
    wave = clip(freq=330.0) * 1e-3
    by_hand = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)  # Wav2Vec2FeatureExtractor's formula
    a, b = plain(waves_to_tensor([wave]))[-1], normed(waves_to_tensor([wave]))[-1]
    assert not torch.allclose(a, b, atol=1e-3)
    assert torch.allclose(b, plain(waves_to_tensor([by_hand.astype(np.float32)]))[-1], atol=1e-5)


def one_line_error(directory: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        load_encoder(str(directory))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_missing_or_bad_files_give_one_line_errors(tmp_path):
    make_mert(tmp_path / "noweights")
    (tmp_path / "noweights" / "pytorch_model.bin").unlink()
    assert "no weights" in one_line_error(tmp_path / "noweights")
    make_mert(tmp_path / "badjson")
    (tmp_path / "badjson" / "config.json").write_text("{not json")
    assert "not valid JSON" in one_line_error(tmp_path / "badjson")
    make_mert(tmp_path / "unknown")
    (tmp_path / "unknown" / "config.json").write_text(json.dumps({"model_type": "no_such_model"}))
    assert "no_such_model" in one_line_error(tmp_path / "unknown")
    make_mert(tmp_path / "noconfig")
    (tmp_path / "noconfig" / "config.json").unlink()
    assert "config.json" in one_line_error(tmp_path / "noconfig")


def test_weights_that_do_not_fit_the_config_give_one_line_error(tmp_path):
    make_mert(tmp_path, hidden=32, layers=2)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    assert "encoder.layers.2" in one_line_error(tmp_path)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_stock_audio_models_load_through_automodel(tmp_path, kind):
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    cfg_cls, model_cls = (Wav2Vec2Config, Wav2Vec2Model) if kind == "wav2vec2" else (HubertConfig, HubertModel)
    base = {k: v for k, v in mert_config_dict(hidden=32, layers=2).items() if k in cfg_cls().to_dict()}
    torch.manual_seed(4)
    model = model_cls(cfg_cls(**{**base, "do_stable_layer_norm": False})).eval()
    model.save_pretrained(tmp_path)
    enc = load_encoder(str(tmp_path))
    assert type(enc.model) is model_cls and enc.num_hidden_states == 3
    waves = waves_to_tensor([clip()])
    expected = model(input_values=waves, output_hidden_states=True).hidden_states
    assert len(enc(waves)) == 3 and all(torch.equal(a, b) for a, b in zip(enc(waves), expected, strict=True))


def test_package_never_trusts_remote_code():
    pattern = re.compile(r"trust_remote_code\s*=\s*(?!False)")
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
    assert any("trust_remote_code=False" in p.read_text() for p in PACKAGE.rglob("*.py"))  # the grep can match


def test_unequal_lengths_are_refused():
    with pytest.raises(ConfigError, match="equal lengths"):
        waves_to_tensor([clip(1.0), clip(1.5)])


def test_batch_of_equal_clips_matches_each_alone(mert_dir):
    enc = load_encoder(str(mert_dir))
    a, b = clip(freq=220.0, seed=1), clip(freq=440.0, seed=2)
    both = enc(waves_to_tensor([a, b]))
    alone = [enc(waves_to_tensor([w])) for w in (a, b)]
    for i in range(2):
        for layer, single in zip(both, alone[i], strict=True):
            assert torch.allclose(layer[i], single[0], atol=1e-5)
