"""The official full releases `m-a-p/MusiLingo-{short,long,musicqa}-v1`, loaded without their
custom code (`modelling_musilingo.py` is never downloaded nor run) and without the Vicuna v0
delta merge: the release already holds the merged Vicuna-7B.

A release is one merged state dict in safetensors shards (about 15 GB) holding three parts:

    <proj prefix>llama_proj.{weight,bias}        the trained projection    -> our adapter
    <encoder prefix>feature_extractor...         MERT-v1-330M (HuBERT keys) -> HubertModel
    <llm prefix>model.embed_tokens... lm_head... merged Vicuna-7B v0        -> LlamaForCausalLM

The prefixes are found from the keys, not assumed (the wrapper class of the custom code puts
everything under `model.` with `audio_encoder.` / `llama_model.` inside, but any prefixes work).
Configs are rebuilt from tensor shapes plus the known MERT-v1-330M / Vicuna-7B values. This module
returns tensors and configs only: it imports neither the encoder, the LLM nor the loader, which
builds the parts from what it returns (model/loader.py).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from musilingo_cli.core.console import warn
from musilingo_cli.core.errors import CheckpointError
from musilingo_cli.model.config import EncoderInfo, ModelConfig
from musilingo_cli.model.hub import resolve_dir

ALIASES = {name: f"m-a-p/MusiLingo-{name}-v1" for name in ("short", "long", "musicqa")}
# everything but code: configs, index, shards, any tokenizer files the release carries
RELEASE_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model"]
VICUNA_V0_TOKENIZER = "lmsys/vicuna-7b-delta-v0"
TOKENIZER_FILES = ["tokenizer*", "special_tokens_map.json", "added_tokens.json"]
MERT_ENCODER = "m-a-p/MERT-v1-330M"
MERT_RATE = 24000  # MERT-v1 hears 24 kHz audio
INDEX_FILE = "model.safetensors.index.json"

# MERT-v1-330M as documented (mert-as-hubert.md §3.2); sizes are re-read from the tensors.
MERT_330M = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "feat_proj_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
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
MERT_HEAD_DIM = 64  # 1024 / 16 (330M) and 768 / 12 (95M)
# Vicuna-7B v0 = LLaMA-7B: these are not visible in tensor shapes.
VICUNA_7B = {
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 2048,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": None,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "rope_theta": 10000.0,
}
LLAMA_HEAD_DIM = 128  # 4096 / 32

# buffers that the 2023 code saved with the weights; stock modules recompute them
_SKIP = re.compile(r"rotary_emb\.inv_freq$")
_PROJ_END = "llama_proj.weight"
_MERT_MARK = "feature_extractor.conv_layers.0.conv.weight"


@dataclass
class Release:
    """A release on disk: where each tensor lives and the prefix of each part."""

    directory: Path
    spec: str  # what musilingo.json records: the hub id or the local directory
    shards: dict[str, Path]  # key -> shard file
    prefixes: dict[str, str]  # "proj" | "encoder" | "llm" -> key prefix

    def keys_of(self, part: str) -> list[str]:
        """The keys of one part: those whose longest matching part prefix is this part's."""
        return [k for k in self.shards if _owner(k, self.prefixes) == part]

    def read(
        self, part: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> dict[str, torch.Tensor]:
        """The part's tensors with its prefix stripped, read shard by shard (only its keys)."""
        from safetensors import safe_open

        prefix, by_shard = self.prefixes[part], defaultdict(list)
        for key in self.keys_of(part):
            if not _SKIP.search(key):
                by_shard[self.shards[key]].append(key)
        state = {}
        for shard, keys in sorted(by_shard.items()):
            with safe_open(str(shard), framework="pt", device="cpu") as f:
                for key in keys:
                    t = f.get_tensor(key)
                    cast = dtype if dtype is not None and t.is_floating_point() else t.dtype
                    state[key[len(prefix) :]] = t.to(device=device, dtype=cast)
        return state

    def head_dim_hint(self) -> int | None:
        """LLaMA head size from a saved rotary buffer (inv_freq has head_dim / 2 entries), if any."""
        from safetensors import safe_open

        keys = [k for k in self.keys_of("llm") if _SKIP.search(k)]
        if not keys:
            return None
        with safe_open(str(self.shards[keys[0]]), framework="pt", device="cpu") as f:
            return 2 * f.get_slice(keys[0]).get_shape()[0]


def resolve_release(spec: str) -> tuple[Path, str]:
    """Alias, hub id or local directory -> (local directory, the id to record). Downloads only
    configs, weights and tokenizer files: the release's Python code is never fetched."""
    repo = ALIASES.get(spec, spec)
    directory = resolve_dir(repo, "official MusiLingo release", RELEASE_FILES)
    return directory, repo


def open_release(spec: str) -> Release:
    """Index a release: which shard holds each key (checking every shard is there) and prefixes."""
    directory, recorded = resolve_release(spec)
    shards = _shard_map(directory)
    return Release(directory, recorded, shards, find_prefixes(list(shards)))


def _shard_map(directory: Path) -> dict[str, Path]:
    from safetensors import safe_open

    index_path = directory / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index_path} is not a safetensors index ({err}); re-download the release") from None
        missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
        if missing:
            raise CheckpointError(
                f"{directory} lacks {', '.join(missing)} (listed in {INDEX_FILE}): the download "
                "is incomplete; fetch it again with `hf download <repo>` or re-run while online"
            )
        return {k: directory / f for k, f in weight_map.items()}
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{directory} has no *.safetensors weights: not an official MusiLingo release "
            "(use our checkpoint directory, an official .pth, or short/long/musicqa)"
        )
    shards = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shards.update({k: path for k in f.keys()})
    return shards


def find_prefixes(keys: list[str]) -> dict[str, str]:
    """Prefix of each part, found by marker keys (so any wrapper naming works)."""
    proj = [k[: -len(_PROJ_END)] for k in keys if k.endswith(_PROJ_END)]
    mert = [k[: k.index(_MERT_MARK)] for k in keys if _MERT_MARK in k]
    head = [k[: -len("lm_head.weight")] for k in keys if k.endswith("lm_head.weight")]
    embed = [k[: -len("model.embed_tokens.weight")] for k in keys if k.endswith("model.embed_tokens.weight")]
    found = {"proj": proj, "encoder": mert, "llm": head or embed}
    bad = {part: hits for part, hits in found.items() if len(set(hits)) != 1}
    if bad:
        what = "; ".join(
            f"{part}: {'none' if not hits else 'several ' + str(sorted(set(hits)))}" for part, hits in bad.items()
        )
        raise CheckpointError(
            f"not a MusiLingo release: expected one projection (*llama_proj.weight), one MERT "
            f"(*{_MERT_MARK}) and one LLaMA (*lm_head.weight) in the weights ({what})"
        )
    return {"proj": proj[0] + "llama_proj.", "encoder": mert[0], "llm": found["llm"][0]}


def _owner(key: str, prefixes: dict[str, str]) -> str | None:
    """The part whose prefix is the longest one `key` starts with (prefixes may nest, e.g. '')."""
    hits = [(len(p), part) for part, p in prefixes.items() if key.startswith(p)]
    return max(hits)[1] if hits else None


# --- configs from tensor shapes (no remote code, no config download) ---


def mert_config_from(state: dict[str, torch.Tensor]) -> dict:
    """A MERT-style config dict: MERT-v1-330M values, sizes checked against the tensors."""
    layers = _count(state, r"encoder\.layers\.(\d+)\.")
    convs = _count(state, r"feature_extractor\.conv_layers\.(\d+)\.")
    hidden = state["feature_projection.projection.weight"].shape[0]
    pos = state.get("encoder.pos_conv_embed.conv.weight_v")
    if pos is None:
        pos = state["encoder.pos_conv_embed.conv.parametrizations.weight.original1"]
    conv_norms = sum(f"feature_extractor.conv_layers.{i}.layer_norm.weight" in state for i in range(convs))
    return {
        **MERT_330M,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // MERT_HEAD_DIM),
        "intermediate_size": state["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        "conv_dim": [state[f"feature_extractor.conv_layers.{i}.conv.weight"].shape[0] for i in range(convs)],
        "conv_kernel": [state[f"feature_extractor.conv_layers.{i}.conv.weight"].shape[2] for i in range(convs)],
        "conv_stride": MERT_330M["conv_stride"][:convs],
        "conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "feat_extract_norm": "layer" if conv_norms == convs > 1 else "group",
        "feat_proj_layer_norm": "feature_projection.layer_norm.weight" in state,
        "num_conv_pos_embeddings": pos.shape[2],
        "num_conv_pos_embedding_groups": hidden // pos.shape[1],
    }


def llama_config_from(state: dict[str, torch.Tensor], head_dim: int | None = None):
    """A LlamaConfig for Vicuna-7B v0 (hidden 4096, 32 layers, 32 heads, FFN 11008, vocab 32001),
    every size read from the tensors; the head size from the rotary buffer when saved."""
    from transformers import LlamaConfig

    vocab, hidden = state["model.embed_tokens.weight"].shape
    head_dim = head_dim or LLAMA_HEAD_DIM
    if hidden % head_dim:
        raise CheckpointError(f"LLM hidden size {hidden} is not a multiple of the head size {head_dim}")
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=state["model.layers.0.mlp.gate_proj.weight"].shape[0],
        num_hidden_layers=_count(state, r"model\.layers\.(\d+)\."),
        num_attention_heads=hidden // head_dim,
        num_key_value_heads=state["model.layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
        **VICUNA_7B,
    )


def _count(state: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def release_normalize(directory: Path) -> bool:
    """do_normalize from the release's preprocessor_config.json if it has one, else from
    MERT-v1-330M's own (what the official code's processor reads; one small file), else False
    (MERT's training setting)."""
    from huggingface_hub import hf_hub_download

    own = directory / "preprocessor_config.json"
    if own.is_file():
        return bool(json.loads(own.read_text()).get("do_normalize", False))
    try:
        path = hf_hub_download(MERT_ENCODER, "preprocessor_config.json")
        return bool(json.loads(Path(path).read_text()).get("do_normalize", False))
    except Exception:  # offline and not cached: fall back to how MERT was trained
        warn(
            f"{MERT_ENCODER} preprocessor_config.json not available: audio is not normalised per clip "
            "(MERT's training setting); put the file in the release directory to decide otherwise"
        )
        return False


# --- tokenizer ---


def load_release_tokenizer(directory: Path):
    """The release's tokenizer files, else Vicuna v0's; repaired to bos=1, eos=2, pad=eos (the
    official code pads with eos, and its stop ids assume the standard LLaMA vocabulary)."""
    from transformers import AutoTokenizer

    source = (
        directory
        if any(directory.glob("tokenizer*"))
        else resolve_dir(VICUNA_V0_TOKENIZER, "tokenizer", TOKENIZER_FILES)
    )
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **_special_token_fixes(source))
    for role, want in (("bos", 1), ("eos", 2)):
        if getattr(tok, f"{role}_token_id") != want:
            token = tok.convert_ids_to_tokens(want)
            if token is None:
                raise CheckpointError(f"tokenizer in {source} has no id {want} for {role}; not a LLaMA tokenizer")
            warn(f"tokenizer {role} token repaired to id {want} ({token!r}), as LLaMA's vocabulary defines it")
            setattr(tok, f"{role}_token", token)
    tok.pad_token = tok.eos_token
    return tok, source


def _special_token_fixes(source: Path) -> dict[str, str]:
    """Early LLaMA conversions (Vicuna v0 among them) wrote "" for bos/eos/unk in
    tokenizer_config.json; transformers 5 then recurses forever looking up the empty unk token.
    Give those LLaMA's own names (ids 1, 2, 0 in its vocabulary)."""
    path = source / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        config = {}
    llama = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return {k: v for k, v in llama.items() if not _token_text(config.get(k))}


def _token_text(value) -> str:
    return value.get("content", "") if isinstance(value, dict) else (value or "")


# --- what the loader asks of a release ---


def adapter_state(release: Release) -> dict[str, torch.Tensor]:
    """The trained projection as our adapter's state: {"proj.weight": [H, D], "proj.bias": [H]} in fp32."""
    return {"proj." + k: v.float() for k, v in release.read("proj").items()}


def release_config(release: Release, encoder: str | None = None, llm: str | None = None) -> ModelConfig:
    """Stage-2 text format (what the official evaluation uses: '###Human: ... ###Assistant: ',
    stop on '###'); the release config's end_sym '\\n' / max_txt_len 32 are qa.py defaults that
    only matter for training. Parts point at the release unless overridden; the tokenizer is the
    release's own files if it carries them, else Vicuna v0's."""
    has_tokenizer = any(release.directory.glob("tokenizer*"))
    tokenizer = None if llm else (release.spec if has_tokenizer else VICUNA_V0_TOKENIZER)
    return ModelConfig.for_stage(
        "finetune", encoder=encoder or release.spec, llm=llm or release.spec, tokenizer=tokenizer
    )


def is_release(spec: str | None) -> bool:
    """True for an alias, an m-a-p/MusiLingo-* hub id, or a local copy of a release."""
    if not spec:
        return False
    if spec in ALIASES or spec.lower().startswith("m-a-p/musilingo-"):
        return True
    config = Path(spec) / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") == "musilingo"
    except (OSError, json.JSONDecodeError):
        return False


def release_encoder_info(release: Release) -> EncoderInfo:
    """EncoderInfo of the release's MERT from tensor names and shapes (no weights are read)."""
    prefix = release.prefixes["encoder"]
    layers = _count({k[len(prefix) :]: 0 for k in release.keys_of("encoder")}, r"encoder\.layers\.(\d+)\.")
    hidden = _shape(release, release.prefixes["proj"] + "weight")[1]  # llama_proj.weight is [H, D]
    return EncoderInfo(MERT_RATE, release_normalize(release.directory), hidden, layers + 1)


def _shape(release: Release, key: str) -> list[int]:
    from safetensors import safe_open

    with safe_open(str(release.shards[key]), framework="pt", device="cpu") as f:
        return list(f.get_slice(key).get_shape())
