"""Audio in: real files of many formats decode to float32 mono at the target rate, broken files
fail with one AudioError line that names them, and crop/chunk cut exactly what they promise."""

import shutil

import numpy as np
import pytest
import soundfile as sf
from audio_helpers import (
    HAVE_FFMPEG,
    peak_frequency,
    tone,
    write_corrupt,
    write_empty,
    write_m4a,
    write_music,
    write_text,
    write_tone,
    write_truncated,
    write_webm,
    write_zero_samples,
)

from musilingo_cli.core.errors import AudioError
from musilingo_cli.model import audio

SR = 24000
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg is not installed")
LOSSY = 0.05  # seconds: mp3/aac/opus frames, encoder delay and padding

# name, native rate, channels, sf.write kwargs, tolerance in seconds (None: within 1 sample)
FORMATS = [
    ("pcm16.wav", 44100, 1, {"subtype": "PCM_16"}, None),
    ("pcm24.wav", 48000, 1, {"subtype": "PCM_24"}, None),
    ("float.wav", 22050, 1, {"subtype": "FLOAT"}, None),
    ("double.wav", 32000, 1, {"subtype": "DOUBLE"}, None),
    ("lossless.flac", 44100, 1, {}, None),
    ("vorbis.ogg", 44100, 1, {"format": "OGG", "subtype": "VORBIS"}, LOSSY),
    ("opus.opus", 48000, 1, {"format": "OGG", "subtype": "OPUS"}, LOSSY),
    ("song.mp3", 44100, 1, {"format": "MP3"}, LOSSY),
    ("stereo.wav", 44100, 2, {}, None),
    ("phone.wav", 8000, 1, {}, None),
    ("surround.wav", 48000, 6, {}, None),
    ("native.aiff", 24000, 1, {}, None),
]


@pytest.mark.parametrize("name, rate, channels, kwargs, tolerance", FORMATS, ids=[f[0] for f in FORMATS])
def test_decodes_to_mono_float32_at_target_rate(tmp_path, name, rate, channels, kwargs, tolerance):
    path = tmp_path / name
    write_tone(path, 1.5, rate, channels=channels, freq=1000.0, **kwargs)
    wave = audio.load_audio(path, SR)
    assert wave.dtype == np.float32 and wave.ndim == 1
    expected = round(1.5 * SR)
    assert abs(len(wave) - expected) <= (1 if tolerance is None else tolerance * SR)
    assert abs(peak_frequency(wave, SR) - 1000.0) < 2.0
    # the level survives decoding and resampling (each channel holds the same 0.5 sine)
    assert np.max(np.abs(wave[SR // 10 : -SR // 10])) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("freqs", [[440.0, 1000.0], [110.0, 220.0, 440.0, 880.0, 1000.0, 1500.0]])
def test_downmix_averages_channels(tmp_path, freqs):
    path = tmp_path / "tones.wav"
    source = write_tone(path, 1.0, SR, freq=freqs, subtype="FLOAT")
    wave = audio.load_audio(path, SR)  # same rate: no resampling, so the mean is exact
    np.testing.assert_allclose(wave, source.mean(axis=1), atol=1e-7)


def test_resampled_music_matches_soxr_of_the_mean(tmp_path):
    import soxr

    path = tmp_path / "music.flac"
    source = write_music(path, 4.0, 44100, seed=3, channels=2, subtype="PCM_24")
    wave = audio.load_audio(path, SR)
    decoded, _ = sf.read(path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(wave, soxr.resample(decoded.mean(axis=1), 44100, SR, quality="HQ"))
    assert np.max(np.abs(source)) > 0.3 and not audio.is_silent(wave)


def test_three_minute_file(tmp_path):
    path = tmp_path / "long.wav"
    write_music(path, 180.0, 44100, seed=1, channels=2, subtype="PCM_16")
    wave = audio.load_audio(path, SR)
    assert abs(len(wave) - 180 * SR) <= 1
    assert audio.duration_seconds(path) == pytest.approx(180.0)


@needs_ffmpeg
@pytest.mark.parametrize("writer, suffix", [(write_m4a, ".m4a"), (write_webm, ".webm")])
def test_ffmpeg_containers(tmp_path, writer, suffix):
    path = tmp_path / f"clip{suffix}"
    writer(path, 2.0, 44100 if suffix == ".m4a" else 48000, channels=2, freq=880.0)
    wave = audio.load_audio(path, SR)
    assert wave.dtype == np.float32 and abs(len(wave) - 2 * SR) <= LOSSY * SR
    assert abs(peak_frequency(wave, SR) - 880.0) < 2.0
    assert audio.duration_seconds(path) == pytest.approx(2.0, abs=LOSSY)


def test_m4a_without_ffmpeg_names_ffmpeg(tmp_path, monkeypatch):
    path = tmp_path / "clip.m4a"
    if HAVE_FFMPEG:
        write_m4a(path, 1.0)
    else:
        write_corrupt(path)  # never reaches decoding: the missing program is reported first
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert shutil.which("ffmpeg") is None
    with pytest.raises(AudioError) as info:
        audio.load_audio(path, SR)
    message = str(info.value)
    assert "clip.m4a" in message and "ffmpeg" in message and "apt-get install ffmpeg" in message
    assert "\n" not in message


def test_undecodable_wav_without_ffmpeg_says_both(tmp_path, monkeypatch):
    path = write_text(tmp_path / "notes.wav")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(AudioError, match=r"notes\.wav: soundfile cannot decode.*ffmpeg"):
        audio.load_audio(path, SR)


def _broken_files(tmp_path):
    valid = tmp_path / "valid.wav"
    write_tone(valid, 2.0, 44100, channels=2, subtype="PCM_16")
    flac = tmp_path / "valid.flac"
    write_music(flac, 3.0, 44100)
    mp3 = tmp_path / "valid.mp3"
    write_music(mp3, 3.0, 44100)
    (tmp_path / "folder.wav").mkdir()
    return {
        "missing": tmp_path / "missing.wav",
        "directory": tmp_path / "folder.wav",
        "empty": write_empty(tmp_path / "empty.wav"),
        "half wav": write_truncated(tmp_path / "half.wav", valid),
        "header-only wav": write_truncated(tmp_path / "header.wav", valid, keep_bytes=60),
        "half flac": write_truncated(tmp_path / "half.flac", flac),
        "half mp3": write_truncated(tmp_path / "half.mp3", mp3),
        "random mp3": write_corrupt(tmp_path / "random.mp3"),
        "text wav": write_text(tmp_path / "text.wav"),
        "zero samples": write_zero_samples(tmp_path / "silence0.wav"),
    }


BROKEN = ["missing", "directory", "empty", "half wav", "header-only wav", "half flac", "half mp3",
          "random mp3", "text wav", "zero samples"]  # fmt: skip


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_files_raise_one_line_naming_the_file(tmp_path, kind):
    path = _broken_files(tmp_path)[kind]
    with pytest.raises(AudioError) as info:
        audio.load_audio(path, SR)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 400


def test_reasons_are_specific(tmp_path):
    files = _broken_files(tmp_path)
    expected = {"missing": "no such file", "directory": "directory", "empty": "empty", "half wav": "truncated",
                "half flac": "truncated", "half mp3": "truncated", "zero samples": "no audio samples"}  # fmt: skip
    for kind, words in expected.items():
        with pytest.raises(AudioError, match=words):
            audio.load_audio(files[kind], SR)


@needs_ffmpeg
def test_truncated_webm_is_an_error(tmp_path):
    whole = tmp_path / "whole.webm"
    write_webm(whole, 3.0)
    with pytest.raises(AudioError, match="half.webm: truncated"):
        audio.load_audio(write_truncated(tmp_path / "half.webm", whole), SR)


def test_non_finite_samples_are_an_error(tmp_path):
    signal = tone(0.5, SR)
    signal[100] = np.nan
    sf.write(tmp_path / "nan.wav", signal, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        audio.load_audio(tmp_path / "nan.wav", SR)


def test_silence_loads_and_is_flagged(tmp_path):
    write_tone(tmp_path / "quiet.wav", 1.0, SR, amplitude=1e-4, subtype="FLOAT")
    wave = audio.load_audio(tmp_path / "quiet.wav", SR)
    assert audio.is_silent(wave) and not audio.is_silent(wave, threshold_db=-90.0)
    assert audio.is_silent(np.zeros(10, np.float32)) and not audio.is_silent(tone(0.1, SR)[:, 0])


def test_normalize_matches_wav2vec2_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, do_normalize=True)
    wave = (0.3 * tone(2.0, SR, 440.0)[:, 0] + 0.1).astype(np.float32)
    expected = extractor(wave, sampling_rate=SR, return_tensors="np")["input_values"][0]
    np.testing.assert_array_equal(audio.normalize(wave), expected)
    assert abs(float(audio.normalize(wave).mean())) < 1e-5


def test_crop_and_pad():
    wave = np.arange(100, dtype=np.float32)
    np.testing.assert_array_equal(audio.crop(wave, 10, 2.0, offset_seconds=1.0), wave[10:30])
    assert len(audio.crop(wave, 10, 2.0, offset_seconds=9.0)) == 10
    padded = audio.crop(wave, 10, 2.0, offset_seconds=9.0, pad=True)
    assert len(padded) == 20 and padded.dtype == np.float32
    np.testing.assert_array_equal(padded, np.concatenate([wave[90:], np.zeros(10, np.float32)]))
    assert len(audio.crop(wave, 10, 1.0, offset_seconds=20.0)) == 0
    with pytest.raises(ValueError):
        audio.crop(wave, 10, -1.0)


def test_random_crop_is_a_window_of_exact_length():
    wave = np.arange(1000, dtype=np.float32)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        piece = audio.random_crop(wave, 100, 1.5, rng)
        assert len(piece) == 150
        np.testing.assert_array_equal(piece, np.arange(piece[0], piece[0] + 150))
        starts.add(int(piece[0]))
    assert len(starts) > 10 and min(starts) >= 0 and max(starts) <= 850
    short = audio.random_crop(wave[:50], 100, 1.5, rng)
    assert len(short) == 150 and np.all(short[50:] == 0)
    assert len(audio.random_crop(wave[:50], 100, 1.5, rng, pad=False)) == 50
    again = [audio.random_crop(wave, 100, 1.5, np.random.default_rng(7))[0] for _ in range(2)]
    assert again[0] == again[1]


@pytest.mark.parametrize(
    "n, expected",
    [
        (1000, [300, 300, 300, 100]),  # 1.0 s tail kept
        (950, [300, 300, 350]),  # 0.5 s tail merged into the last full chunk
        (900, [300, 300, 300]),
        (250, [250]),  # shorter than one chunk: one chunk
        (50, [50]),  # even shorter than min_seconds: still kept
        (0, []),
    ],
)
def test_chunk_lengths(n, expected):
    wave = np.arange(n, dtype=np.float32)
    chunks = audio.chunk(wave, 100, 3.0, min_seconds=1.0)
    assert [len(c) for c in chunks] == expected
    if n:
        np.testing.assert_array_equal(np.concatenate(chunks), wave)


def test_duration_and_hash(tmp_path):
    path = tmp_path / "a.flac"
    write_tone(path, 2.5, 44100)
    assert audio.duration_seconds(path) == pytest.approx(2.5)
    copy = tmp_path / "b.flac"
    copy.write_bytes(path.read_bytes())
    assert audio.content_hash(path) == audio.content_hash(copy)
    write_tone(copy, 2.5, 44100, freq=441.0)
    assert audio.content_hash(path) != audio.content_hash(copy) and len(audio.content_hash(path)) == 64
    with pytest.raises(AudioError, match="no such file"):
        audio.duration_seconds(tmp_path / "nope.wav")


def test_extensions():
    assert {".wav", ".flac", ".mp3", ".m4a", ".opus", ".webm", ".aif"} <= audio.AUDIO_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in audio.AUDIO_EXTENSIONS)
