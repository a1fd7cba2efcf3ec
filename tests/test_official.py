"""Official models in both published layouts, built small and synthetic (nothing downloaded):

- the adapter-only `checkpoint_N.pth` (projection + rotary buffers, pickled) -> load_model(pth, encoder, llm);
- the full merged hub release (safetensors shards + index + the release's config.json) -> load_model(dir),
  under two prefix conventions: the custom code's wrapper (`model.audio_encoder.`, `model.llama_model.`,
  `model.llama_proj.`, legacy weight-norm names, rotary buffers saved) and a flat one (`mert.`,
  `vicuna.`, `llama_proj.`, new weight-norm names, no tokenizer: Vicuna v0's from the HF cache).
Each must give the same features and the same greedy answers as the parts loaded separately.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import make_llm, make_mert

from musilingo_cli.core.errors import CheckpointError
from musilingo_cli.model.checkpoint import read_checkpoint, save_checkpoint
from musilingo_cli.model.config import ModelConfig
from musilingo_cli.model.encoder import waves_to_tensor
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.model.loader import assemble, load_model
from musilingo_cli.model.release import (
    MERT_330M,
    VICUNA_V0_TOKENIZER,
    find_prefixes,
    llama_config_from,
    mert_config_from,
)

GREEDY = GenerationSettings.from_preset("greedy", max_new_tokens=8)
QUESTIONS = ["What genre is this?", "Describe the audio in detail."]
RELEASE_CONFIG = {
    "architectures": ["MusilingoModel"],
    "model_type": "musilingo",
    "auto_map": {
        "AutoConfig": "configuration_musilingo.MusiLingoConfig",
        "AutoModel": "modelling_musilingo.MusilingoModel",
    },
    "mert_model": "m-a-p/MERT-v1-330M",
    "llama_model": "/path/to/7B_vicuna",
    "max_txt_len": 32,
    "end_sym": "\n",
    "prompt_template": "###Human: {} ###Assistant: ",
    "vocab_size": 32001,
    "pad_token_id": 0,
    "low_resource": False,
    "device_8bit": 0,
    "prompt_path": "",
}
WRAPPED = {"proj": "model.", "encoder": "model.audio_encoder.", "llm": "model.llama_model."}
FLAT = {"proj": "", "encoder": "mert.", "llm": "vicuna."}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Tiny MERT (hidden 128 -> 2 heads of 64, as MERT's head size) and tiny LLaMA, plus W, b."""
    root = tmp_path_factory.mktemp("parts")
    make_mert(root / "mert", hidden=128, layers=2, seed=3)
    make_llm(root / "llm", seed=4)
    torch.manual_seed(5)
    w, b = torch.randn(64, 128) * 0.2, torch.randn(64) * 0.1
    return root, w, b


@pytest.fixture(scope="module")
def waves():
    rng = np.random.default_rng(0)
    t = np.arange(24000 * 2) / 24000
    return waves_to_tensor(
        [
            (0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            for f in (220.0, 330.0)
        ]
    )


def reference(parts) -> object:
    """The parts loaded separately, with W, b set directly."""
    root, w, b = parts
    config = ModelConfig.for_stage("finetune", encoder=str(root / "mert"), llm=str(root / "llm"))
    return assemble(config, {"proj.weight": w, "proj.bias": b})


def answers(model, waves) -> list[str]:
    feats = model.encode(waves)
    return model.generate(list(feats), QUESTIONS, GREEDY)


def mert_state(directory: Path, legacy: bool) -> dict[str, torch.Tensor]:
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    if not legacy:  # how a newer torch names weight-norm tensors
        state = {
            k.replace("weight_g", "parametrizations.weight.original0").replace(
                "weight_v", "parametrizations.weight.original1"
            ): v
            for k, v in state.items()
        }
    return state


def write_release(
    out: Path, parts, prefixes: dict[str, str], legacy: bool, rotary: bool, tokenizer: bool, shards: int = 3
) -> Path:
    """A release directory as the hub holds it: config.json, N shards, the index, tokenizer files."""
    from safetensors.torch import load_file, save_file

    root, w, b = parts
    llm = load_file(root / "llm" / "model.safetensors")
    if rotary:  # the 2023 LLaMA code saved its rotary buffers with the weights
        llm.update(
            {
                f"model.layers.{i}.self_attn.rotary_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, 16, 2) / 16)
                for i in range(2)
            }
        )
    state = {prefixes["proj"] + "llama_proj.weight": w, prefixes["proj"] + "llama_proj.bias": b}
    state.update({prefixes["encoder"] + k: v for k, v in mert_state(root / "mert", legacy).items()})
    state.update({prefixes["llm"] + k: v for k, v in llm.items()})
    out.mkdir(parents=True)
    keys, weight_map = sorted(state), {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {k: state[k].contiguous() for k in keys[i::shards]}
        save_file(chunk, out / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, name))
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    (out / "config.json").write_text(json.dumps(RELEASE_CONFIG))
    (out / "modelling_musilingo.py").write_text("raise SystemExit('remote code must never run')\n")
    if tokenizer:
        for f in (root / "llm").glob("tokenizer*"):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache (offline mode is set by conftest)."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    return cache


def cache_snapshot(cache: Path, repo: str, files: list[Path]) -> None:
    """Put files into the cache as `hf download` leaves them (refs/main -> snapshots/<rev>)."""
    rev = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(rev)
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True)
    for f in files:
        shutil.copy(f, snap / f.name)


# --- (a) the adapter-only .pth ---


def test_official_pth_loads_like_directly_set_weights(parts, waves, tmp_path):
    root, w, b = parts
    pth = tmp_path / "checkpoint_5.pth"
    torch.save(
        {
            "model": {
                "llama_proj.weight": w,
                "llama_proj.bias": b,
                "llama_model.model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8),
            },
            "optimizer": {},
            "epoch": 5,
        },
        pth,
    )
    model = load_model(str(pth), encoder=str(root / "mert"), llm=str(root / "llm"))
    assert torch.equal(model.adapter.proj.weight, w) and torch.equal(model.adapter.proj.bias, b)
    assert answers(model, waves) == answers(reference(parts), waves)


class Payload:  # any non-tensor object: weights_only=True must refuse to unpickle it
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pth_with_pickled_object_is_refused(parts, tmp_path, capsys):
    root, w, b = parts
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"llama_proj.weight": w, "llama_proj.bias": b}, "extra": Payload()}, pth)
    with pytest.raises(CheckpointError) as err:
        load_model(str(pth), encoder=str(root / "mert"), llm=str(root / "llm"))
    assert "\n" not in str(err.value) and "pickle code ran" not in capsys.readouterr().out


# --- (b) the full release ---


@pytest.mark.parametrize("layout", ["wrapped", "flat"])
def test_release_loads_like_its_parts(parts, waves, tmp_path, hf_cache, layout):
    root = parts[0]
    if layout == "wrapped":
        release = write_release(tmp_path / "rel", parts, WRAPPED, legacy=True, rotary=True, tokenizer=True)
    else:  # no tokenizer in the release: Vicuna v0's comes from the cache (tokenizer-only snapshot)
        release = write_release(tmp_path / "rel", parts, FLAT, legacy=False, rotary=True, tokenizer=False, shards=2)
        cache_snapshot(hf_cache, VICUNA_V0_TOKENIZER, list((root / "llm").glob("tokenizer*")))
    model = load_model(str(release))
    ref = reference(parts)
    assert torch.equal(model.adapter.proj.weight, parts[1])
    assert torch.equal(model.encode(waves), ref.encode(waves))
    assert answers(model, waves) == answers(ref, waves)
    tok = model.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert model.config.encoder == model.config.llm == str(release)
    assert model.config.end_sym == "###" and model.config.prompt_template == RELEASE_CONFIG["prompt_template"]
    assert ModelConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))) == model.config


def test_release_checkpoint_round_trip(parts, waves, tmp_path):
    root = parts[0]
    release = write_release(tmp_path / "rel", parts, WRAPPED, legacy=True, rotary=True, tokenizer=True)
    model = load_model(str(release))
    ckpt = save_checkpoint(tmp_path / "ckpt", model.config, model.trainable_state())
    config, state = read_checkpoint(ckpt)
    assert config.encoder == str(release) and torch.equal(state["proj.weight"], parts[1])
    # the release's parts are the tiny MERT and LLaMA, so those stand in for them here
    again = load_model(str(ckpt), encoder=str(root / "mert"), llm=str(root / "llm"))
    assert all(torch.equal(v, again.trainable_state()[k]) for k, v in model.trainable_state().items())
    assert answers(again, waves) == answers(model, waves)


def test_export_release_writes_our_format(parts, waves, tmp_path):
    from musilingo_cli.model.loader import export_release

    release = write_release(tmp_path / "rel", parts, FLAT, legacy=True, rotary=True, tokenizer=True)
    out = export_release(str(release), tmp_path / "ours")
    assert json.loads((out / "musilingo.json").read_text())["encoder"] == "encoder"  # relative: it travels
    config, state = read_checkpoint(out)  # relative parts resolve inside the checkpoint directory
    assert (config.encoder, config.llm) == (str(out / "encoder"), str(out / "llm"))
    assert torch.equal(state["proj.weight"], parts[1])
    assert answers(load_model(str(out)), waves) == answers(reference(parts), waves)


def test_release_overrides_replace_parts(parts, waves, tmp_path):
    root = parts[0]
    release = write_release(tmp_path / "rel", parts, WRAPPED, legacy=True, rotary=True, tokenizer=True)
    model = load_model(str(release), encoder=str(root / "mert"), llm=str(root / "llm"))
    assert (model.config.encoder, model.config.llm) == (str(root / "mert"), str(root / "llm"))
    assert answers(model, waves) == answers(reference(parts), waves)
    assert load_model(str(release), with_encoder=False).encoder is None


def test_release_with_missing_shard_is_one_line_error(parts, tmp_path):
    release = write_release(tmp_path / "rel", parts, WRAPPED, legacy=True, rotary=True, tokenizer=True)
    (release / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors") as err:
        load_model(str(release))
    assert "\n" not in str(err.value)


def test_alias_offline_and_not_cached_names_repo_and_fix(hf_cache):
    with pytest.raises(CheckpointError) as err:
        load_model("short")
    msg = str(err.value)
    assert "m-a-p/MusiLingo-short-v1" in msg and "hf download" in msg and "HF_HUB_OFFLINE" in msg
    assert "\n" not in msg


def test_directory_that_is_not_a_release_is_refused(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "x").mkdir()
    save_file({"encoder.layers.0.weight": torch.zeros(2)}, tmp_path / "x" / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a MusiLingo release"):
        load_model(str(tmp_path / "x"))


# --- full-size shapes (meta tensors: no memory) ---


def test_prefix_search_tolerates_nesting():
    keys = [
        "llama_proj.weight",
        "llama_proj.bias",
        "enc.feature_extractor.conv_layers.0.conv.weight",
        "model.embed_tokens.weight",
        "lm_head.weight",
    ]
    assert find_prefixes(keys) == {"proj": "llama_proj.", "encoder": "enc.", "llm": ""}


def test_full_size_configs_from_shapes():
    from transformers import HubertModel

    from musilingo_cli.model.encoder import mert_to_hubert_config

    m = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    llm = {
        "model.embed_tokens.weight": m(32001, 4096),
        "model.layers.0.mlp.gate_proj.weight": m(11008, 4096),
        "model.layers.0.self_attn.k_proj.weight": m(4096, 4096),
        "model.layers.31.input_layernorm.weight": m(4096),
    }
    c = llama_config_from(llm)
    assert (
        c.vocab_size,
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.intermediate_size,
        c.rms_norm_eps,
        c.max_position_embeddings,
        c.bos_token_id,
        c.eos_token_id,
    ) == (32001, 4096, 32, 32, 32, 11008, 1e-6, 2048, 1, 2)
    with torch.device("meta"):
        hubert = HubertModel(mert_to_hubert_config(MERT_330M))
    mert = mert_config_from({k: v for k, v in hubert.state_dict().items()})
    assert {k: mert[k] for k in MERT_330M} == MERT_330M
    assert sum(p.numel() for p in hubert.parameters()) == 315_428_992


def test_vicuna_v0_style_tokenizer_is_repaired(tmp_path):
    """A SentencePiece `tokenizer.model` with the empty special tokens of early LLaMA conversions
    (as Vicuna v0 ships it) loads, with bos=1, eos=2 and pad=eos."""
    import csv

    import sentencepiece as spm
    from model_helpers import CAPTIONS_CSV

    from musilingo_cli.model.release import load_release_tokenizer

    with CAPTIONS_CSV.open(newline="") as f:
        text = [row["caption"] for row in csv.DictReader(f)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text * 3),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=300,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (tmp_path / "tokenizer.vocab").unlink()
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "",
                "eos_token": "",
                "unk_token": "",
                "model_max_length": 2048,
            }
        )
    )
    (tmp_path / "special_tokens_map.json").write_text("{}")
    tok, source = load_release_tokenizer(tmp_path)
    assert source == tmp_path and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    ids = tok("the drums play a rock beat", add_special_tokens=False).input_ids
    assert 0 not in ids and tok.decode(ids) == "the drums play a rock beat"


def test_checkpoint_whose_parts_are_a_release_loads_without_overrides(parts, waves, tmp_path):
    release = write_release(tmp_path / "rel", parts, WRAPPED, legacy=True, rotary=True, tokenizer=True)
    from_release = load_model(str(release))
    ckpt = save_checkpoint(tmp_path / "ft", from_release.config, from_release.trainable_state())
    assert answers(load_model(str(ckpt)), waves) == answers(from_release, waves)


def test_training_can_start_from_a_release(parts, waves, tmp_path):
    """`train --init short`: the release's projection, MERT and Vicuna; the result loads alone."""
    from train_helpers import train_config, write_clips, write_qa_jsonl

    from musilingo_cli.pipelines.train import run
    from musilingo_cli.pipelines.train.engine import model_config_for

    release = write_release(tmp_path / "rel", parts, WRAPPED, legacy=True, rotary=True, tokenizer=True)
    names = write_clips(tmp_path / "audio", 2)
    data = write_qa_jsonl(tmp_path / "qa.jsonl", names)
    config = train_config(
        tmp_path,
        llm=None,
        mert=None,
        data=data,
        audio_dir=tmp_path / "audio",
        init=str(release),
        pool_window=325,
        max_steps=1,
        save_every=1,
    )
    config = dataclasses.replace(config, encoder=None, llm=None)  # the parts come from --init
    model_config, state = model_config_for(config)
    assert (model_config.encoder, model_config.llm) == (str(release), str(release))
    assert torch.equal(state["proj.weight"], parts[1])
    result = run(config)
    trained = load_model(str(result.final))
    assert trained.config.encoder == str(release)
    assert not torch.equal(trained.adapter.proj.weight, parts[1])  # one step moved it
    assert len(answers(trained, waves)) == len(QUESTIONS)
