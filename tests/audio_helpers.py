"""Real audio files for tests: tones, synthetic music, ffmpeg-only containers and broken files.

Import from any test suite as `from audio_helpers import write_music` (pytest puts `tests/`
on sys.path because it has no `__init__.py`). Every writer creates a real file on
disk and returns what it wrote, so tests compare against the signal rather than hard-coded
numbers. Nothing here is downloaded; ffmpeg writers need the `ffmpeg` program (`HAVE_FFMPEG`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

HAVE_FFMPEG = shutil.which("ffmpeg") is not None


def tone(seconds: float, sr: int, freq: float | Sequence[float] = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A (frames, channels) float64 sine; one channel per entry when `freq` is a sequence."""
    freqs = [freq] if np.isscalar(freq) else list(freq)
    t = np.arange(int(round(seconds * sr))) / sr
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs], axis=1)


def write_tone(
    path: str | Path,
    seconds: float,
    sr: int,
    channels: int = 1,
    freq: float | Sequence[float] = 440.0,
    amplitude: float = 0.5,
    subtype: str | None = None,
    format: str | None = None,
) -> np.ndarray:
    """Write a sine tone with soundfile and return it as (frames, channels) float64.

    `freq` may be one frequency (repeated on all `channels`) or one per channel (then
    `channels` is ignored). `subtype`/`format` go to `sf.write` (e.g. "PCM_24", "FLOAT";
    format="OGG", subtype="OPUS"); the extension picks the format when they are None.
    """
    if np.isscalar(freq):
        freq = [freq] * channels
    signal = tone(seconds, sr, freq, amplitude)
    sf.write(str(path), signal, sr, subtype=subtype, format=format)
    return signal


def synth_music(seconds: float, sr: int, seed: int = 0, bpm: float = 120.0) -> np.ndarray:
    """Mono float64 'music' in [-1, 1]: harmonic notes with decaying envelopes, kick and hi-hat.

    Eighth notes from a C-major pentatonic scale (random per `seed`), 4 harmonics each, a kick
    (falling sine) on every beat and a noise hi-hat on the off-beats. Cheap: 3 minutes at
    24 kHz synthesise in well under a second.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    step = int(round(sr * 30.0 / bpm))  # one eighth note, in samples
    t = np.arange(step) / sr
    scale = 261.63 * 2.0 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12.0)
    note_env = np.exp(-t * 6.0) * np.minimum(1.0, t / 0.01)
    kick = np.sin(2 * np.pi * np.cumsum(50.0 + 100.0 * np.exp(-t * 30.0)) / sr) * np.exp(-t * 12.0)
    hat_env = np.exp(-t * 60.0)
    for i, start in enumerate(range(0, n, step)):
        length = min(step, n - start)
        f0 = rng.choice(scale)
        note = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5)) * note_env
        drum = kick if i % 2 == 0 else rng.standard_normal(step) * hat_env * 0.3
        out[start : start + length] += (0.35 * note + 0.4 * drum)[:length]
    return np.clip(out + 0.003 * rng.standard_normal(n), -1.0, 1.0)


def write_music(
    path: str | Path,
    seconds: float,
    sr: int,
    seed: int = 0,
    channels: int = 1,
    subtype: str | None = None,
    format: str | None = None,
) -> np.ndarray:
    """Write `synth_music` (same on all `channels`) with soundfile; return (frames, channels)."""
    signal = np.repeat(synth_music(seconds, sr, seed)[:, None], channels, axis=1)
    sf.write(str(path), signal, sr, subtype=subtype, format=format)
    return signal


def ffmpeg_encode(source: str | Path, target: str | Path, *codec_args: str) -> Path:
    """Re-encode `source` into `target` with ffmpeg (`codec_args` e.g. "-c:a", "aac")."""
    if not HAVE_FFMPEG:
        raise RuntimeError("ffmpeg is not on PATH; skip this test when HAVE_FFMPEG is False")
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *codec_args, str(target)]
    subprocess.run(command, check=True, capture_output=True)
    return Path(target)


def _write_via_ffmpeg(path, seconds, sr, channels, freq, codec_args) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "source.wav"
        signal = write_tone(wav, seconds, sr, channels=channels, freq=freq, subtype="FLOAT")
        ffmpeg_encode(wav, path, *codec_args)
    return signal


def write_m4a(path: str | Path, seconds: float, sr: int = 44100, channels: int = 1, freq=440.0) -> np.ndarray:
    """Write a sine tone as AAC in an .m4a container (needs ffmpeg); return the source signal."""
    return _write_via_ffmpeg(path, seconds, sr, channels, freq, ("-c:a", "aac", "-b:a", "128k"))


def write_webm(path: str | Path, seconds: float, sr: int = 48000, channels: int = 1, freq=440.0) -> np.ndarray:
    """Write a sine tone as Opus in a .webm container (needs ffmpeg); return the source signal."""
    return _write_via_ffmpeg(path, seconds, sr, channels, freq, ("-c:a", "libopus", "-b:a", "96k"))


def write_corrupt(path: str | Path, n_bytes: int = 8192, seed: int = 0) -> Path:
    """Fill `path` with random bytes (not audio whatever its extension says)."""
    Path(path).write_bytes(np.random.default_rng(seed).bytes(n_bytes))
    return Path(path)


def write_text(path: str | Path) -> Path:
    """A plain-text file under an audio name (e.g. notes renamed to .wav)."""
    Path(path).write_text("This is not audio.\n" * 40)
    return Path(path)


def write_empty(path: str | Path) -> Path:
    """A 0-byte file."""
    Path(path).write_bytes(b"")
    return Path(path)


def write_truncated(path: str | Path, source: str | Path, keep_bytes: int | None = None) -> Path:
    """Copy the first `keep_bytes` (default: half) of the valid file `source` to `path`."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2 if keep_bytes is None else keep_bytes])
    return Path(path)


def write_zero_samples(path: str | Path, sr: int = 16000) -> Path:
    """A valid WAV header with no sample frames."""
    sf.write(str(path), np.zeros((0, 1), dtype=np.float32), sr)
    return Path(path)


def peak_frequency(wave: np.ndarray, sr: int) -> float:
    """Frequency (Hz) of the strongest FFT bin of a Hann-windowed mono signal."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * sr / len(wave))


def write_music_via_ffmpeg(
    path: str | Path, seconds: float, sr: int, *codec_args: str, seed: int = 0, quiet_seconds: float = 0.0
) -> np.ndarray:
    """`synth_music` re-encoded by ffmpeg with `codec_args` (needs ffmpeg); the first `quiet_seconds`
    are 60 dB down (a quiet intro makes a VBR encoder start with tiny frames). Returns the source."""
    signal = synth_music(seconds, sr, seed)
    signal[: int(quiet_seconds * sr)] *= 0.001
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "source.wav"
        sf.write(str(wav), signal, sr, subtype="FLOAT")
        ffmpeg_encode(wav, path, *codec_args)
    return signal


def write_vbr_mp3_without_xing(
    path: str | Path, seconds: float, sr: int = 44100, seed: int = 0, quiet_seconds: float = 0.0
) -> np.ndarray:
    """A VBR mp3 (LAME -q:a 4) written without its Xing/Info header (`-write_xing 0`), as some
    rippers and web tools make them: only decoding the whole stream tells its length."""
    return write_music_via_ffmpeg(
        path, seconds, sr, "-c:a", "libmp3lame", "-q:a", "4", "-write_xing", "0", seed=seed, quiet_seconds=quiet_seconds
    )


def ogg_page_ends(path: str | Path) -> list[int]:
    """Byte offsets where the Ogg pages of `path` end (RFC 3533 page headers)."""
    data, pos, ends = Path(path).read_bytes(), 0, []
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        segments = data[pos + 26]
        pos += 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        ends.append(pos)
    return ends
