"""Feature cache with the real tiny MERT: hits skip the encoder, a changed encoder or pool
window invalidates, random crops are fixed per clip, broken audio is reported, files are checked."""

from __future__ import annotations

import shutil

import pytest
import torch
from audio_helpers import write_corrupt, write_music
from model_helpers import make_mert

from musilingo_cli.core.errors import ConfigError
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.data.datasets import Example
from musilingo_cli.data.feature_cache import Crop, FeatureCache, FeatureSpec, build_cache, encoder_fingerprint
from musilingo_cli.model.adapter import combine_and_pool
from musilingo_cli.model.audio import load_audio
from musilingo_cli.model.encoder import load_encoder


@pytest.fixture(scope="module")
def merts(tmp_path_factory):
    root = tmp_path_factory.mktemp("merts")
    return make_mert(root / "a", seed=0), make_mert(root / "b", seed=1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i, seconds in enumerate([1.0, 1.0, 1.5, 3.0]):
        write_music(root / f"c{i}.wav", seconds, 44100, seed=i)
    write_corrupt(root / "broken.wav")
    return root


def _examples(clips, crop=None, names=("c0", "c1", "c2")):
    return [Example(clips / f"{n}.wav", None, "a", n, "jsonl", crop) for n in names]


class Encoder:
    """Loads a real encoder and counts loads and forward calls."""

    def __init__(self, path, mode="mean", window=8):
        self.path, self.mode, self.window = path, mode, window
        self.loads = self.calls = 0

    def load(self):
        self.loads += 1
        return load_encoder(str(self.path))

    def encode(self, encoder, waves):
        self.calls += 1
        return combine_and_pool(encoder(waves), self.mode, self.window).float()


def _cache(directory, mert, window=8, mode="mean", seed=0):
    spec = FeatureSpec(encoder_fingerprint(mert), 24000, False, "fp32", window, mode)
    return FeatureCache(directory, spec, crop_seed=seed)


def test_hits_skip_the_encoder_and_match_direct_encoding(tmp_path, merts, clips):
    enc = Encoder(merts[0])
    first = build_cache(_examples(clips), _cache(tmp_path, merts[0]), 1, enc.load, enc.encode, batch_size=4)
    assert (first.hits, first.encoded, enc.loads) == (0, 3, 1)
    assert enc.calls == 2  # c0 and c1 share a length and one batch; c2 is alone
    again = Encoder(merts[0])
    second = build_cache(_examples(clips), _cache(tmp_path, merts[0]), 1, again.load, again.encode)
    assert (second.hits, second.encoded, again.loads, again.calls) == (3, 0, 0, 0)
    assert second.keys == first.keys and not second.encoder_loaded
    direct = combine_and_pool(
        load_encoder(str(merts[0]))(torch.from_numpy(load_audio(clips / "c2.wav", 24000))[None]), "mean", 8
    )[0]
    cached = _cache(tmp_path, merts[0]).load(second.keys[2][0])
    assert cached.shape == direct.shape == (14, 32)  # 1.5 s -> 112 frames -> 112 / 8 tokens
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)


def test_changed_encoder_or_pool_window_is_never_reused(tmp_path, merts, clips):
    base = build_cache(
        _examples(clips), _cache(tmp_path, merts[0]), 1, Encoder(merts[0]).load, Encoder(merts[0]).encode
    )
    other = Encoder(merts[1])
    changed = build_cache(_examples(clips), _cache(tmp_path, merts[1]), 1, other.load, other.encode)
    assert (changed.hits, changed.encoded, other.loads) == (0, 3, 1)
    assert not set(sum(base.keys.values(), [])) & set(sum(changed.keys.values(), []))
    a = _cache(tmp_path, merts[0]).load(base.keys[0][0])
    b = _cache(tmp_path, merts[1]).load(changed.keys[0][0])
    assert not torch.allclose(a, b)
    # the same weights copied elsewhere are the same encoder: the cache is shared
    copy = tmp_path / "copy"
    shutil.copytree(merts[0], copy)
    assert encoder_fingerprint(copy) == encoder_fingerprint(merts[0])
    window = Encoder(merts[0], window=16)
    rewindowed = build_cache(_examples(clips), _cache(tmp_path, merts[0], window=16), 1, window.load, window.encode)
    assert rewindowed.hits == 0 and rewindowed.encoded == 3
    assert _cache(tmp_path, merts[0], window=16).load(rewindowed.keys[0][0]).shape[0] == 5


def test_a_file_from_another_spec_is_refused(tmp_path, merts, clips):
    report = build_cache(
        _examples(clips)[:1], _cache(tmp_path, merts[0]), 1, Encoder(merts[0]).load, Encoder(merts[0]).encode
    )
    other = _cache(tmp_path, merts[0], window=16)
    key = report.keys[0][0]
    target = other.path(other.key("f" * 64, Crop()))  # a file under a key of the other spec
    target.parent.mkdir(exist_ok=True)
    shutil.copy(_cache(tmp_path, merts[0]).path(key), target)
    with pytest.raises(ConfigError, match="another encoder/pooling spec"):
        other.load(target.stem)


def test_random_crops_fixed_per_clip_and_seed(tmp_path, merts, clips):
    examples = _examples(clips, crop=1.0, names=("c3",))  # a 3 s clip, 1 s crops
    enc = Encoder(merts[0], mode="learned")
    report = build_cache(examples, _cache(tmp_path, merts[0], mode="learned"), 3, enc.load, enc.encode)
    assert report.encoded == 3 and enc.calls == 1  # three equal-length crops in one batch
    cache = _cache(tmp_path, merts[0], mode="learned")
    crops = [cache.load(k) for k in report.keys[0]]
    assert all(c.shape == (3, 10, 32) for c in crops)  # [L, T', D] per layer in learned mode
    assert not torch.allclose(crops[0], crops[1])
    again = build_cache(examples, _cache(tmp_path, merts[0], mode="learned"), 3, enc.load, enc.encode)
    assert again.keys == report.keys and again.hits == 3
    reseeded = build_cache(examples, _cache(tmp_path, merts[0], mode="learned", seed=5), 3, enc.load, enc.encode)
    assert reseeded.encoded == 3


def test_broken_audio_is_reported_and_dropped(tmp_path, merts, clips):
    examples = _examples(clips, names=("c0", "broken"))
    report = build_cache(examples, _cache(tmp_path, merts[0]), 1, Encoder(merts[0]).load, Encoder(merts[0]).encode)
    assert list(report.keys) == [0] and report.broken == [str(clips / "broken.wav")]


def test_audio_hashes_are_remembered(tmp_path, merts, clips):
    cache = _cache(tmp_path, merts[0])
    digest = cache.audio_hash(clips / "c0.wav")
    cache.close()
    index = list(tmp_path.glob("audio_hashes.*.jsonl"))
    assert len(index) == 1 and digest in index[0].read_text()
    assert _cache(tmp_path, merts[0])._hashes  # read back by the next run


def test_ranks_shard_by_file_not_by_cache_state_and_hash_each_file_once(tmp_path, merts, clips):
    """Two ranks on one cache, rank 0 finishing its whole pass before rank 1 even looks (ranks
    that drift apart): every clip is still encoded by exactly one rank, and hashed by one."""
    examples = _examples(clips, names=("c0", "c1", "c2", "c3"))
    encoders = [Encoder(merts[0]), Encoder(merts[0])]
    reports = {}

    def rank1_runs_now():  # rank 0's barrier: rank 1 runs its whole pass while rank 0 waits
        reports[1] = build_cache(
            examples,
            FeatureCache(tmp_path, _spec(merts[0]), rank=1),
            1,
            encoders[1].load,
            encoders[1].encode,
            rank=1,
            world=2,
        )

    reports[0] = build_cache(
        examples,
        FeatureCache(tmp_path, _spec(merts[0]), rank=0),
        1,
        encoders[0].load,
        encoders[0].encode,
        rank=0,
        world=2,
        barrier=rank1_runs_now,
    )
    assert (reports[0].encoded, reports[1].encoded) == (2, 2) and reports[0].hits == reports[1].hits == 0
    assert reports[0].keys == reports[1].keys and sorted(reports[0].keys) == [0, 1, 2, 3]
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 4
    hashed = [[r["file"].split("|")[0] for r in read_jsonl(tmp_path / f"audio_hashes.{r}.jsonl")] for r in (0, 1)]
    assert sorted(hashed[0] + hashed[1]) == sorted(str((clips / f"c{i}.wav").resolve()) for i in range(4))
    assert not set(hashed[0]) & set(hashed[1])  # each file hashed by one rank only


def _spec(mert):
    return FeatureSpec(encoder_fingerprint(mert), 24000, False, "fp32", 8, "mean")
