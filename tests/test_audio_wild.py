"""Audio from the wild (issue 11): length from the audio, not the header; truncation found in every
container; only what is used is decoded and kept; any loader exception is one file's result."""

import threading
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from audio_helpers import (
    HAVE_FFMPEG,
    ogg_page_ends,
    write_m4a,
    write_music,
    write_music_via_ffmpeg,
    write_truncated,
    write_vbr_mp3_without_xing,
    write_webm,
)

from musilingo_cli.core.errors import AudioError
from musilingo_cli.data.batching import Clip, decode_ahead, prepare_clip
from musilingo_cli.model import audio

SR = 24000
LOSSY = 0.08  # seconds: mp3 encoder delay and padding, Opus pre-skip
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg is not installed")


@needs_ffmpeg
@pytest.mark.parametrize("quiet_seconds", [0.0, 6.0], ids=["loud start", "quiet start"])
def test_vbr_mp3_without_xing_header_is_heard_whole(tmp_path, quiet_seconds):
    path = tmp_path / "ripped.mp3"
    write_vbr_mp3_without_xing(path, 25.0, seed=3, quiet_seconds=quiet_seconds)
    assert not audio.mp3_has_length_header(path)
    estimate = sf.info(str(path)).duration
    assert abs(estimate - 25.0) > 2.0  # the header's estimate is really wrong: the case the fix is for
    decoded = audio.read_audio(path, SR)
    assert abs(len(decoded.wave) / SR - 25.0) < LOSSY and abs(decoded.seconds_total - 25.0) < LOSSY
    assert abs(audio.duration_seconds(path) - 25.0) < LOSSY
    # the first 10 s only: the same samples as the whole decode, and nothing past them kept
    start = audio.read_audio(path, SR, max_seconds=10.0)
    assert len(start.wave) == 10 * SR and start.wave.base is None
    np.testing.assert_allclose(start.wave, decoded.wave[: 10 * SR], atol=1e-6)


@needs_ffmpeg
def test_mp3_with_xing_header_is_recognised(tmp_path):
    path = tmp_path / "lame.mp3"
    write_music_via_ffmpeg(path, 5.0, 44100, "-c:a", "libmp3lame", "-q:a", "4")
    assert audio.mp3_has_length_header(path)
    write_music(tmp_path / "sndfile.mp3", 3.0, 44100)  # libsndfile's LAME writes one too
    assert audio.mp3_has_length_header(tmp_path / "sndfile.mp3")
    assert abs(len(audio.load_audio(path, SR)) / SR - 5.0) < LOSSY


@needs_ffmpeg
def test_a_bad_frame_inside_a_stream_that_decodes_is_not_an_error(tmp_path):
    good = tmp_path / "good.mp3"
    write_vbr_mp3_without_xing(good, 12.0, seed=4)
    data = good.read_bytes()
    junk = tmp_path / "junk.mp3"  # ffmpeg logs "Header missing" and decodes on
    junk.write_bytes(data[: len(data) // 3] + b"\x00\x11" * 500 + data[len(data) // 3 :])
    wave = audio.load_audio(junk, SR)
    assert abs(len(wave) / SR - 12.0) < 0.2


def _ogg(tmp_path, name, codec_args, seconds=20.0):
    path = tmp_path / name
    write_music_via_ffmpeg(path, seconds, 48000, *codec_args, seed=5)
    return path


OGG = [("vorbis.ogg", ("-c:a", "libvorbis")), ("opus.opus", ("-c:a", "libopus")), ("flac.oga", ("-c:a", "flac"))]


@needs_ffmpeg
@pytest.mark.parametrize("name, codec", OGG, ids=[o[0] for o in OGG])
def test_ogg_cut_at_half_or_at_a_page_boundary_is_truncated(tmp_path, name, codec):
    whole = _ogg(tmp_path, name, codec)
    assert audio.ogg_problem(whole) is None
    assert abs(len(audio.load_audio(whole, SR)) / SR - 20.0) < LOSSY
    half = write_truncated(tmp_path / f"half-{name}", whole)
    with pytest.raises(AudioError, match=r"truncated \(its last Ogg page is cut short"):
        audio.load_audio(half, SR)
    ends = ogg_page_ends(whole)
    at_page = write_truncated(tmp_path / f"page-{name}", whole, keep_bytes=ends[len(ends) // 2])
    with pytest.raises(AudioError, match="no end-of-stream page"):
        audio.load_audio(at_page, SR)


def _whole_and_half(tmp_path, kind):
    """A valid file of each container we decode, and its first half."""
    path = tmp_path / f"whole.{kind}"
    if kind in ("wav", "flac", "aiff"):
        write_music(path, 6.0, 44100, seed=1)
    elif kind == "mp3":
        write_music(path, 6.0, 44100, seed=1)  # libsndfile: with a Xing header
    elif kind == "ogg":
        write_music(path, 6.0, 44100, seed=1, format="OGG", subtype="VORBIS")
    elif kind == "opus":
        write_music(path, 6.0, 48000, seed=1, format="OGG", subtype="OPUS")
    elif kind == "webm":
        write_webm(path, 6.0)
    elif kind == "m4a":
        write_m4a(path, 6.0)
    return path, write_truncated(tmp_path / f"half.{kind}", path)


CONTAINERS = ["wav", "flac", "aiff", "mp3", "ogg", "opus"] + (["webm", "m4a"] if HAVE_FFMPEG else [])


@pytest.mark.parametrize("kind", CONTAINERS)
def test_every_container_cut_in_half_is_an_error(tmp_path, kind):
    whole, half = _whole_and_half(tmp_path, kind)
    assert abs(len(audio.load_audio(whole, SR)) / SR - 6.0) < LOSSY
    with pytest.raises(AudioError) as info:
        audio.load_audio(half, SR)
    message = str(info.value)
    assert message.startswith(f"{half}: ") and "\n" not in message
    assert "truncated" in message or kind == "m4a" and "cannot decode" in message  # m4a: index at the end


@pytest.mark.parametrize("name, kwargs", [("long.wav", {"subtype": "PCM_16"}), ("long.flac", {})])
def test_max_seconds_decodes_and_keeps_only_what_is_used(tmp_path, name, kwargs):
    path = tmp_path / name
    write_music(path, 300.0, 44100, seed=2, **kwargs)
    whole = audio.load_audio(path, SR)
    tracemalloc.start()
    try:
        clip = prepare_clip(str(path), SR, chunk_seconds=10.0, max_seconds=30.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    used = 30 * SR * 4  # float32 bytes the model hears
    assert clip.seconds_used == 30.0 and clip.seconds_total == pytest.approx(300.0)
    kept = {id(c.base if c.base is not None else c): (c.base if c.base is not None else c).nbytes for c in clip.chunks}
    assert sum(kept.values()) == used  # the chunks are views of exactly the samples used
    assert peak < 4 * used < whole.nbytes / 2  # decoding 30 s never held the 5-minute file
    np.testing.assert_allclose(np.concatenate(clip.chunks), whole[: 30 * SR], atol=1e-6)


def test_read_ahead_is_bounded_by_seconds_of_audio():
    started = []
    lock = threading.Lock()

    def load(path: str) -> Clip:
        with lock:
            started.append(path)
        return Clip([np.zeros(10, np.float32)], 10.0, 10.0)  # "10 s" each

    paths = [f"f{k}" for k in range(60)]
    stream = decode_ahead(paths, load, workers=2, ahead=1000, ahead_seconds=40.0)
    first = next(stream)
    assert first[0] == "f0"
    time.sleep(0.3)  # room for an unbounded read-ahead to run off (the bound holds at any speed)
    assert len(started) <= 40 / 10 + 2 + 1  # budget + one per worker + the one handed out
    rest = [path for path, _ in stream]
    assert rest == paths[1:]  # and every file still comes, in order


def test_any_exception_of_one_file_is_that_files_result_but_ctrl_c_is_not():
    class DecoderOwnError(Exception):  # a library's exception that is not ours
        pass

    errors = {"eio": OSError(5, "Input/output error"), "oom": MemoryError(), "lib": DecoderOwnError("bad frame")}

    def load(path: str) -> Clip:
        if path in errors:
            raise errors[path]
        return Clip([np.zeros(4, np.float32)], 1.0, 1.0)

    results = list(decode_ahead(["a", "eio", "b", "oom", "lib", "c"], load, workers=2))
    assert [p for p, _ in results] == ["a", "eio", "b", "oom", "lib", "c"]
    assert {p: r for p, r in results if isinstance(r, Exception)} == errors
    assert all(isinstance(r, Clip) for p, r in results if p not in errors)

    def interrupted(path: str) -> Clip:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(decode_ahead(["a", "b"], interrupted, workers=1))


@needs_ffmpeg
def test_ffmpeg_only_container_with_max_seconds(tmp_path):
    path = tmp_path / "clip.webm"
    write_webm(path, 6.0)
    whole = audio.read_audio(path, SR)
    start = audio.read_audio(path, SR, max_seconds=2.0)
    assert len(start.wave) == 2 * SR and start.seconds_total == pytest.approx(6.0, abs=LOSSY)
    np.testing.assert_allclose(start.wave, whole.wave[: 2 * SR], atol=1e-6)


def test_mp3_without_xing_and_without_ffmpeg_says_so(tmp_path, monkeypatch):
    if not HAVE_FFMPEG:
        pytest.skip("writing an mp3 without its Xing header needs ffmpeg")
    path = tmp_path / "ripped.mp3"
    write_vbr_mp3_without_xing(path, 4.0)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(AudioError, match="no Xing/Info header.*needs ffmpeg"):
        audio.load_audio(path, SR)
