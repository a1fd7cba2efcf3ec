"""The feature cache: the frozen encoder's pooled output per clip (and crop), computed once.

MERT is frozen, and the layer mean and temporal pooling are linear, so training needs MERT
only to make `[T', D]` ("mean") or `[L, T', D]` ("learned": per layer) features. A cache pass
encodes each clip once; training then runs without loading the encoder at all.

Layout of a cache directory (shareable between runs, machines and encoders):

    cache/
      manifest.json            the specs (encoder fingerprint, rate, pooling, ...) written into it
      audio_hashes.<r>.jsonl   path + size + mtime -> sha256 of the file (so files are hashed once)
      ab/abcdef....safetensors one tensor "features"; metadata repeats the spec and the crop

A feature's key is sha256 over the audio *content* hash, the encoder fingerprint (its config
files and the sha256 of its weight files), sample rate, normalisation, encoder dtype, pool
window, layer combination and the crop (seconds, index, seed). So a changed encoder, pool
window or crop is never silently reused: it simply has other keys. Each file's metadata holds
the spec hash too and is checked on load. Files are written to a temporary name and renamed,
so a killed pass leaves no half file, and a rerun only encodes what is missing.

Random crops (MSD 30.5 s, MusicQA 15.5 s): `crops_per_clip` crops per clip are cached, each at
a start drawn from a generator seeded by (seed, audio hash, crop index), so they are the same
in every run; training uses crop `epoch % crops_per_clip` in each epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from musilingo_cli.core.errors import AudioError, ConfigError
from musilingo_cli.core.journal import Journal, atomic_path, atomic_write_text, read_jsonl
from musilingo_cli.data.datasets import Example

FEATURES_FORMAT = 1


@dataclass(frozen=True)
class FeatureSpec:
    """Everything besides the audio and the crop that changes the cached features."""

    encoder: str  # fingerprint: see encoder_fingerprint
    sample_rate: int
    normalize: bool
    encoder_dtype: str
    pool_window: int
    layer_combine: str
    format: int = FEATURES_FORMAT

    def digest(self) -> str:
        """A short stable hash of the spec (stored in each file's metadata)."""
        return _sha(json.dumps(asdict(self), sort_keys=True))[:16]


@dataclass(frozen=True)
class Crop:
    """Which part of a clip: the whole clip (seconds None) or random crop `index` of `seconds`."""

    seconds: float | None = None
    index: int = 0


def encoder_fingerprint(encoder_dir: str | Path) -> str:
    """sha256 over the encoder's config files and the contents of its weight files. Weight
    hashes are remembered per (path, size, mtime) in this process."""
    directory = Path(encoder_dir)
    parts = []
    for name in ("config.json", "preprocessor_config.json"):
        if (directory / name).exists():
            parts.append(name + ":" + _sha((directory / name).read_bytes()))
    weights = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    parts += [w.name + ":" + _file_sha(w) for w in weights]
    return _sha("\n".join(parts))


_FILE_SHA: dict[tuple[str, int, int], str] = {}


def _file_sha(path: Path) -> str:
    """sha256 of a file; a Hugging Face cache snapshot links LFS files (weights) to blobs named by their
    sha256, so that name is used instead of reading gigabytes again every run."""
    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", target.name):
        return target.name
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_SHA:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _FILE_SHA[memo] = digest.hexdigest()
    return _FILE_SHA[memo]


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


class FeatureCache:
    """One cache directory seen through one FeatureSpec."""

    def __init__(self, directory: str | Path, spec: FeatureSpec, crop_seed: int = 0, rank: int = 0):
        self.dir = Path(directory)
        self.spec = spec
        self.crop_seed = crop_seed
        self.rank = rank
        self.dir.mkdir(parents=True, exist_ok=True)
        self._hashes: dict[str, str] = {}
        self.read_hashes()
        self._hash_journal: Journal | None = None
        if rank == 0:
            self._record_spec()

    def read_hashes(self) -> None:
        """(Re)read the audio hashes every rank and run recorded in this cache."""
        for index in sorted(self.dir.glob("audio_hashes.*.jsonl")):
            self._hashes.update({r["file"]: r["sha256"] for r in read_jsonl(index)})

    # --- keys ---
    def audio_hash(self, path: Path) -> str:
        """sha256 of the file's bytes, read once per (path, size, mtime) across runs."""
        from musilingo_cli.model.audio import content_hash

        stat = path.stat()
        file_id = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if file_id not in self._hashes:
            _test_only_slow_hash(self.rank)
            self._hashes[file_id] = content_hash(path)
            if self._hash_journal is None:
                self._hash_journal = Journal(self.dir / f"audio_hashes.{self.rank}.jsonl", key=lambda r: r["file"])
            self._hash_journal.append({"file": file_id, "sha256": self._hashes[file_id]})
        return self._hashes[file_id]

    def key(self, audio_hash: str, crop: Crop) -> str:
        """The feature key of one crop of one clip under this spec."""
        crop_part = None if crop.seconds is None else [crop.seconds, crop.index, self.crop_seed]
        return _sha(json.dumps([audio_hash, asdict(self.spec), crop_part], sort_keys=True))

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    # --- read/write ---
    def load(self, key: str) -> torch.Tensor:
        """The cached features; a file written under another spec is refused, never reused."""
        from safetensors import safe_open

        with safe_open(str(self.path(key)), framework="pt") as f:
            if f.metadata().get("spec") != self.spec.digest():
                raise ConfigError(
                    f"{self.path(key)} was written for another encoder/pooling spec; "
                    "delete it or use a fresh --cache-dir"
                )
            return f.get_tensor("features")

    def save(self, key: str, features: torch.Tensor, crop: Crop, audio_hash: str) -> None:
        """Write atomically (temporary file + rename): concurrent or killed writers are harmless."""
        from safetensors.torch import save_file

        target = self.path(key)
        target.parent.mkdir(exist_ok=True)
        meta = {
            "spec": self.spec.digest(),
            "audio": audio_hash,
            "crop_seconds": str(crop.seconds),
            "crop_index": str(crop.index),
        }
        with atomic_path(target) as tmp:
            save_file({"features": features.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=meta)

    def crop_start_rng(self, audio_hash: str, crop: Crop) -> np.random.Generator:
        """The generator that places crop `crop.index` of this clip (same in every run)."""
        return np.random.default_rng([self.crop_seed, int(audio_hash[:15], 16), crop.index])

    def _record_spec(self) -> None:
        manifest = self.dir / "manifest.json"
        data = json.loads(manifest.read_text()) if manifest.exists() else {"format": FEATURES_FORMAT, "specs": {}}
        if self.spec.digest() not in data["specs"]:
            data["specs"][self.spec.digest()] = asdict(self.spec)
            atomic_write_text(manifest, json.dumps(data, indent=2))

    def close(self) -> None:
        if self._hash_journal is not None:
            self._hash_journal.close()
            self._hash_journal = None


def _test_only_slow_hash(rank: int) -> None:
    """TEST HOOK ONLY (tests/test_train_dist.py): MUSILINGO_TEST_SLOW_HASH="RANK:SECONDS" makes one
    rank hash each file slowly, so the tests can make ranks drift apart. Unset in real use."""
    hook = os.environ.get("MUSILINGO_TEST_SLOW_HASH")
    if hook and int(hook.split(":")[0]) == rank:
        time.sleep(float(hook.split(":")[1]))


def crops_of(example: Example, crops_per_clip: int) -> list[Crop]:
    """The crops cached for one example: the whole clip, or `crops_per_clip` random crops."""
    if example.crop_seconds is None:
        return [Crop()]
    return [Crop(example.crop_seconds, k) for k in range(crops_per_clip)]


@dataclass
class CacheReport:
    """What a cache pass found and did."""

    keys: dict[int, list[str]]  # example index -> keys of its crops (examples with broken audio absent)
    hits: int
    encoded: int
    broken: list[str]  # files that could not be decoded (shown in errors)
    encoder_loaded: bool


def build_cache(
    examples: list[Example],
    cache: FeatureCache,
    crops_per_clip: int,
    load_encoder: Callable[[], torch.nn.Module],
    encode: Callable,
    batch_size: int = 8,
    rank: int = 0,
    world: int = 1,
    progress=None,
    barrier: Callable[[], None] | None = None,
) -> CacheReport:
    """Encode every (clip, crop) that is not cached yet, then return the keys of all examples.

    `load_encoder()` is called only when something is missing (so a warm cache never loads the
    encoder); `encode(encoder, waves[B, S]) -> features[B, ...]`. With several ranks, rank r
    hashes, checks and encodes the distinct audio files j % world == r of the sorted file list (a
    split that does not depend on the cache's state, so ranks running at different speeds still
    cover every file once); `barrier()` waits for all, then every rank reads the others' hashes.
    `hits` and `encoded` count this rank's share.
    """
    # The shard is a function of the example list only (never of what the cache holds, which other
    # ranks are changing meanwhile): rank r hashes, checks and encodes the distinct files j % world == r.
    files = sorted({str(ex.audio) for ex in examples})
    mine = set(files[rank::world])
    wanted: dict[str, tuple[Path, str, dict[str, Crop]]] = {}
    hits = 0
    for ex in examples:
        if str(ex.audio) not in mine:
            continue
        digest = cache.audio_hash(ex.audio)
        for crop in crops_of(ex, crops_per_clip):
            key = cache.key(digest, crop)
            if cache.has(key):
                hits += 1
            elif key not in wanted.get(digest, (None, None, {}))[2]:
                # crops shared by several examples of one clip (MusicQA asks many questions per clip) once
                wanted.setdefault(digest, (ex.audio, digest, {}))[2][key] = crop
    todo = [(p, h, list(crops.items())) for p, h, crops in sorted(wanted.values(), key=lambda v: v[1])]
    encoded = 0
    if todo:
        encoder = load_encoder()
        encoded = _encode_all(todo, cache, encoder, encode, batch_size, progress)
        del encoder  # free its memory before the LLM loads
    cache.close()
    if barrier is not None:
        barrier()
    cache.read_hashes()  # the other ranks' hashes: no file is hashed twice
    keys = {
        i: [cache.key(cache.audio_hash(ex.audio), c) for c in crops_of(ex, crops_per_clip)]
        for i, ex in enumerate(examples)
    }
    cache.close()
    available = {i: [k for k in ks if cache.has(k)] for i, ks in keys.items()}
    # after the barrier the files tell, on every rank, which clips no rank could decode
    broken_all = sorted({str(examples[i].audio) for i, ks in available.items() if not ks})
    return CacheReport({i: ks for i, ks in available.items() if ks}, hits, encoded, broken_all, bool(todo))


def _encode_all(todo, cache: FeatureCache, encoder, encode, batch_size: int, progress) -> int:
    """Decode clips a few batches at a time, encode equal-length crops together, save each."""
    from musilingo_cli.data.batching import encode_equal_lengths
    from musilingo_cli.model.audio import load_audio, random_crop

    rate = cache.spec.sample_rate
    encoded = 0
    task = progress.add_task("caching features", total=len(todo), status="") if progress else None
    window = max(1, 4 * batch_size)
    for start in range(0, len(todo), window):
        pieces: list[tuple[np.ndarray, str, Crop, str]] = []
        for path, digest, crops in todo[start : start + window]:
            try:
                wave = load_audio(path, rate)
            except AudioError:
                continue  # counted as broken by build_cache: it has no features
            for key, crop in crops:
                piece = (
                    wave
                    if crop.seconds is None
                    else random_crop(wave, rate, crop.seconds, cache.crop_start_rng(digest, crop), pad=False)
                )
                pieces.append((piece, key, crop, digest))
        feats = encode_equal_lengths(lambda w: encode(encoder, w), [p for p, *_ in pieces], batch_size)
        for (_, key, crop, digest), f in zip(pieces, feats):
            cache.save(key, f, crop, digest)
        encoded += len(pieces)
        if task is not None:
            progress.update(task, advance=len(todo[start : start + window]), status=f"{encoded} crops encoded")
    return encoded
