"""What each step sees: `DataOrder` (the seeded, rank-sharded, resumable order of micro-batches)
and `FeatureSource` (features per item, from the feature cache or by encoding audio in the loop),
with the cache pass that fills the cache before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musilingo_cli.core.console import progress, stderr
from musilingo_cli.core.errors import AudioError, DataError
from musilingo_cli.data.batching import encode_equal_lengths
from musilingo_cli.data.datasets import check_missing
from musilingo_cli.data.feature_cache import FeatureCache, FeatureSpec, build_cache, encoder_fingerprint
from musilingo_cli.model.adapter import combine_and_pool
from musilingo_cli.model.audio import load_audio, random_crop
from musilingo_cli.model.encoder import ENCODER_FILES
from musilingo_cli.model.hub import resolve_dir
from musilingo_cli.model.llm import parse_dtype
from musilingo_cli.model.loader import encoder_info, load_encoder_part
from musilingo_cli.model.named_encoders import named_encoder, named_encoder_fingerprint
from musilingo_cli.pipelines.train.config import TrainConfig
from musilingo_cli.pipelines.train.distributed import Dist, _barrier, _sum_ints


class DataOrder:
    """An endless, resumable stream of micro-batches: per epoch a permutation seeded by
    (seed, epoch), trimmed to a multiple of world x micro_batch and dealt out like
    DistributedSampler (rank r takes every world-th item). The position is (epoch, index)."""

    def __init__(self, n: int, micro_batch: int, rank: int, world: int, seed: int):
        self.n, self.micro, self.rank, self.world, self.seed = n, micro_batch, rank, world, seed
        self.per_epoch = n // (world * micro_batch)
        if self.per_epoch == 0:
            raise DataError(f"only {n} usable examples: fewer than micro_batch x processes = {world * micro_batch}")
        self.epoch, self.index = 0, 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _shard(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._cache = (epoch, perm[: self.per_epoch * self.world * self.micro][self.rank :: self.world])
        return self._cache[1]

    def next(self) -> tuple[int, list[int]]:
        """(epoch, example indices) of the next micro-batch of this rank."""
        shard = self._shard(self.epoch)
        batch = shard[self.index * self.micro : (self.index + 1) * self.micro].tolist()
        epoch = self.epoch
        self.index += 1
        if self.index == self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return epoch, batch


class FeatureSource:
    """Micro-batch example indices -> per-item features: from the cache, or by decoding and
    encoding the audio in the loop (--no-cache; fresh random crops every epoch)."""

    def __init__(self, examples, cache=None, keys=None, model=None, seed: int = 0, sample_rate: int = 24000):
        self.examples, self.cache, self.keys, self.model = examples, cache, keys, model
        self.seed, self.rate = seed, sample_rate
        self.broken: set[int] = set()
        self.report = None  # the cache pass's CacheReport

    def features(self, epoch: int, indices: list[int]) -> tuple[list, list[int]]:
        """(features per kept item, kept indices); unreadable audio is skipped and remembered."""
        if self.cache is not None:
            feats = [self.cache.load(self.keys[i][epoch % len(self.keys[i])]) for i in indices]
            return feats, indices
        return self._encode(epoch, indices)

    def _encode(self, epoch: int, indices: list[int]):
        waves, kept = [], []
        for i in indices:
            ex = self.examples[i]
            try:
                wave = load_audio(ex.audio, self.rate)
            except AudioError:
                self.broken.add(i)
                continue
            if ex.crop_seconds is not None:
                wave = random_crop(
                    wave, self.rate, ex.crop_seconds, np.random.default_rng([self.seed, epoch, i]), pad=False
                )
            waves.append(wave)
            kept.append(i)
        return encode_equal_lengths(self.model.encode, waves, batch_size=len(waves) or 1), kept


def _fingerprint(encoder: str) -> str:
    """What keys the feature cache for an encoder: its weights (a named encoder lists its files)."""
    if named := named_encoder(encoder):
        return named_encoder_fingerprint(named)
    return encoder_fingerprint(resolve_dir(encoder, "audio encoder", ENCODER_FILES))


def _feature_source(config: TrainConfig, model_config, examples, dist_info: Dist) -> FeatureSource:
    """Run the cache pass (if caching) and return where features come from."""
    info = encoder_info(model_config.encoder)
    rate, normalize = info.sample_rate, info.normalize
    if model_config.normalize_audio is not None:  # the model config overrides the preprocessor (as loading does)
        normalize = model_config.normalize_audio
    if not config.cache:
        return FeatureSource(examples, seed=config.seed, sample_rate=rate)
    spec = FeatureSpec(
        _fingerprint(model_config.encoder),
        rate,
        normalize,
        config.encoder_dtype,
        model_config.pool_window,
        model_config.layer_combine,
    )
    cache = FeatureCache(
        config.cache_dir or Path(config.out) / "features", spec, crop_seed=config.seed, rank=dist_info.rank
    )

    def load():
        dtype = parse_dtype(config.encoder_dtype)
        encoder = load_encoder_part(model_config.encoder, device=dist_info.device, dtype=dtype)
        encoder.normalize = normalize
        return encoder

    def encode(encoder, waves):
        return combine_and_pool(encoder(waves), model_config.layer_combine, model_config.pool_window).float()

    with progress(transient=True) as bar:
        report = build_cache(
            examples,
            cache,
            config.crops_per_clip,
            load,
            encode,
            config.encode_batch,
            dist_info.rank,
            dist_info.world,
            bar if dist_info.rank == 0 else None,
            _barrier,
        )
    hits, encoded = _sum_ints([report.hits, report.encoded], dist_info)
    if dist_info.rank == 0:
        stderr.print(
            f"feature cache {cache.dir}: {hits} hits, {encoded} crops encoded"
            f"{', encoder not loaded' if not encoded else ''}, {len(report.broken)} broken files"
        )
    lost = len(examples) - len(report.keys)
    check_missing(
        lost,
        len(examples),
        config.max_missing_fraction,
        report.broken[0] if report.broken else None,
        what="undecodable",
    )
    keep = sorted(report.keys)
    source = FeatureSource(
        [examples[i] for i in keep],
        cache=cache,
        keys=[report.keys[i] for i in keep],
        seed=config.seed,
        sample_rate=rate,
    )
    source.report = report
    return source
