"""Audio in: decode any common file to float32 mono at the encoder's rate, then crop or chunk it.

Decoding goes through soundfile (libsndfile: wav, flac, ogg vorbis/opus, mp3, aiff, caf, ...).
Containers libsndfile does not read (m4a, aac, webm, mp4, ...) and files it cannot open go
through the `ffmpeg` program, which hands back a float32 WAV on a pipe; both paths then share
the same downmix (mean of channels) and resampler (soxr "HQ"), so a file gives the same
samples whichever decoder read it. Every anticipated problem is one `AudioError` line that
names the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from musilingo_cli.core.errors import AudioError

AUDIO_EXTENSIONS = frozenset(
    ".wav .flac .ogg .oga .opus .mp3 .m4a .aac .webm .mp4 .aiff .aif .au .caf .w64 .mka .wma".split()
)
# libsndfile cannot read these containers at all: go straight to ffmpeg.
_FFMPEG_ONLY = frozenset(".m4a .aac .webm .mp4 .mka .wma".split())
_INSTALL_FFMPEG = "install it with `apt-get install ffmpeg` or `conda install ffmpeg`"
# libsndfile logs "data : <declared> (should be <present>)" when a WAV/AIFF body is cut short.
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers (ffmpeg on a pipe, recorders) leave these placeholder sizes: not truncation.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode `path` to a 1-D float32 mono array at `sample_rate` Hz.

    Channels are averaged; the rate is converted with soxr (quality "HQ"). Raises AudioError
    (one line naming the file) for a missing, empty, truncated, undecodable or sample-less
    file, or one holding NaN/inf. Silence is not an error: see `is_silent`.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    path = _check_file(path)
    data, native_rate = _decode(path)
    _check_samples(path, data)
    mono = _downmix(data)
    if native_rate != sample_rate:
        mono = soxr.resample(np.ascontiguousarray(mono), native_rate, int(sample_rate), quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def duration_seconds(path: str | os.PathLike) -> float:
    """Length of an audio file in seconds, from its header where possible (no full decode).

    Uses `sf.info`, then `ffprobe`, and only decodes the whole file when neither can tell.
    """
    path = _check_file(path)
    try:
        info = sf.info(str(path))
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError):
        pass
    seconds = _ffprobe_duration(path)
    if seconds is not None:
        return seconds
    data, rate = _decode(path)
    _check_samples(path, data)
    return data.shape[0] / rate


def is_silent(wave: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the peak level of `wave` is below `threshold_db` dBFS (or it has no samples)."""
    if wave.size == 0:
        return True
    peak = float(np.max(np.abs(wave)))
    return peak == 0.0 or 20.0 * np.log10(peak) < threshold_db


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance per clip, as Wav2Vec2FeatureExtractor(do_normalize=True) does.

    Computed in float32 exactly like transformers (`(x - mean) / sqrt(var + 1e-7)`), so the
    result matches the feature extractor bit for bit. Apply it only when the encoder's
    preprocessor config says `do_normalize`.
    """
    x = np.asarray(wave, dtype=np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def crop(
    wave: np.ndarray, sample_rate: int, seconds: float, offset_seconds: float = 0.0, pad: bool = False
) -> np.ndarray:
    """The window of `seconds` starting `offset_seconds` into `wave` (both rounded to samples).

    Shorter near the end of the clip (empty past it) unless `pad=True`, which zero-pads at the
    end to exactly round(seconds * sample_rate) samples. Without padding the result is a view.
    """
    if seconds < 0 or offset_seconds < 0:
        raise ValueError(f"crop needs non-negative seconds and offset, got {seconds}, {offset_seconds}")
    start = int(round(offset_seconds * sample_rate))
    return _window(wave, start, int(round(seconds * sample_rate)), pad)


def random_crop(
    wave: np.ndarray, sample_rate: int, seconds: float, rng: np.random.Generator, pad: bool = True
) -> np.ndarray:
    """A window of `seconds` at a uniformly random start drawn from `rng`.

    A clip shorter than the window is returned whole (zero-padded to the exact length when
    `pad=True`). Crop *after* resampling: the official MusiLingo code computes the crop length
    in 24 kHz samples but applies it at the file's native rate (so a 44.1 kHz MusicQA clip got
    8.4 s instead of 15.5 s); we do not copy that bug.
    """
    if seconds < 0:
        raise ValueError(f"random_crop needs non-negative seconds, got {seconds}")
    length = int(round(seconds * sample_rate))
    start = int(rng.integers(0, len(wave) - length + 1)) if len(wave) > length else 0
    return _window(wave, start, length, pad)


def chunk(wave: np.ndarray, sample_rate: int, seconds: float, min_seconds: float = 1.0) -> list[np.ndarray]:
    """Split `wave` into consecutive, non-overlapping chunks of exactly `seconds` (views).

    All chunks but the last have the same length, so they can be batched through the encoder
    (never pad different lengths into one MERT batch). The remainder becomes a last, shorter
    chunk; a remainder under `min_seconds` is merged into the chunk before it instead, because
    a sliver of audio would become an audio token of its own that carries almost no music
    (and MERT needs at least 400 samples). A clip shorter than `seconds` is one chunk; no
    chunk is ever empty, and an empty wave gives [].
    """
    if seconds <= 0:
        raise ValueError(f"chunk needs seconds > 0, got {seconds}")
    size = max(1, int(round(seconds * sample_rate)))
    starts = list(range(0, len(wave), size))
    tail = len(wave) - starts[-1] if starts else 0
    if len(starts) > 1 and tail < min_seconds * sample_rate:
        starts.pop()  # the last chunk runs to the end of the wave
    ends = starts[1:] + [len(wave)]
    return [wave[a:b] for a, b in zip(starts, ends)]


def content_hash(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB blocks (a key for the feature cache)."""
    digest = hashlib.sha256()
    with open(_check_file(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- decoding ---------------------------------------------------------------------------------


def _check_file(path: str | os.PathLike) -> Path:
    """The path, if it names a readable, non-empty regular file; AudioError otherwise."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioError(f"{p}: cannot be read (permission denied)")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: is empty (0 bytes)")
    return p


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(frames x channels float32, native rate): soundfile first, ffmpeg for what it cannot open."""
    if path.suffix.lower() in _FFMPEG_ONLY:
        return _decode_ffmpeg(path, soundfile_error=None)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        return _decode_ffmpeg(path, soundfile_error=_reason(exc))
    _check_not_truncated(path, info)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: truncated or corrupt ({_reason(exc)})") from None
    # mp3 headers announce a frame count; decoding far fewer means the file was cut short.
    if data.shape[0] < 0.98 * info.frames:
        raise AudioError(
            f"{path}: truncated (header announces {info.frames} frames, only {data.shape[0]} decode)"
        )
    return data, rate


def _check_not_truncated(path: Path, info) -> None:
    """Catch WAV/AIFF files cut short: libsndfile would silently read what is left."""
    for declared, present in _SHORT_CHUNK.findall(info.extra_info):
        declared, present = int(declared), int(present)
        if declared not in _UNKNOWN_SIZES and declared > present + 1:  # +1: pad byte
            raise AudioError(f"{path}: truncated (audio data holds {present} of {declared} bytes)")


def _decode_ffmpeg(path: Path, soundfile_error: str | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with ffmpeg into an in-memory float32 WAV."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        if soundfile_error is None:
            raise AudioError(f"{path}: decoding {path.suffix} files needs ffmpeg, not found on PATH; {_INSTALL_FFMPEG}")
        raise AudioError(
            f"{path}: soundfile cannot decode it ({soundfile_error}) and ffmpeg, which reads more "
            f"formats, is not on PATH; {_INSTALL_FFMPEG}"
        )
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
               "-c:a", "pcm_f32le", "-f", "wav", "-"]  # fmt: skip
    done = subprocess.run(command, capture_output=True)
    problem = _one_line(done.stderr.decode("utf-8", "replace"), path)
    if done.returncode != 0 or not done.stdout:
        what = "not an audio file soundfile or ffmpeg can decode" if soundfile_error else "ffmpeg cannot decode it"
        raise AudioError(f"{path}: {what} ({problem or f'ffmpeg exit status {done.returncode}'})")
    if problem:  # ffmpeg decodes what it can and still exits 0 on a cut-off file
        raise AudioError(f"{path}: truncated or corrupt (ffmpeg: {problem})")
    data, rate = sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
    return data, rate


def _ffprobe_duration(path: Path) -> float | None:
    """Container duration from ffprobe, or None when ffprobe is missing or cannot tell."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    command = [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)]
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        seconds = float(done.stdout.strip())
    except ValueError:
        return None
    return seconds if done.returncode == 0 and np.isfinite(seconds) and seconds > 0 else None


def _downmix(data: np.ndarray) -> np.ndarray:
    """Frames x channels -> the channel mean. Column by column it equals `data.mean(axis=1)` (to the
    last float32 bit up to 6 channels) and is about 20x faster: numpy reduces a short last axis slowly."""
    if data.shape[1] == 1:
        return data[:, 0]
    mono = data[:, 0].copy()
    for channel in range(1, data.shape[1]):
        mono += data[:, channel]
    mono /= np.float32(data.shape[1])
    return mono


def _check_samples(path: Path, data: np.ndarray) -> None:
    """Reject decoded audio with no samples or with NaN/inf (which soxr would smear around)."""
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples; re-export it as PCM or clean float audio")


# --- helpers ------------------------------------------------------------------------------------


def _window(wave: np.ndarray, start: int, length: int, pad: bool) -> np.ndarray:
    """wave[start:start+length], zero-padded at the end to `length` when `pad`."""
    piece = wave[start : start + length]
    if pad and len(piece) < length:
        piece = np.concatenate([piece, np.zeros(length - len(piece), dtype=wave.dtype)])
    return piece


def _reason(exc: Exception) -> str:
    """libsndfile's own words without its "Error opening '<path>': " prefix."""
    text = getattr(exc, "error_string", None) or str(exc)
    text = re.sub(r"^(Error opening .*?: |Error : )", "", text)
    if "does not exist or is not a regular file" in text:  # libsndfile's words for unknown data
        text = "format not recognised"
    return _one_line(text, None).rstrip(".")


def _one_line(text: str, path: Path | None, limit: int = 200) -> str:
    """Collapse a (multi-line) tool message into one short line, dropping echoes of the path."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if path is not None:
        lines = [line.replace(f"{path}: ", "") for line in lines]
    lines = [re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", line) for line in lines]  # ffmpeg's "[mp3 @ 0x..] "
    joined = "; ".join(lines)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"
