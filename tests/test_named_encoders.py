"""Named pretrained encoders: musicnn's TF1 checkpoint read without TensorFlow, the network ported to
PyTorch, and `--encoder musicnn-msd` through describe/load and the trainer's model config.

The port is checked against what the network was trained to say: its MagnaTagATune tagger names
the instrument of rendered piano and violin clips (tags come from the wheel's own back end)."""

import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musilingo_cli.core.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

needs_musicnn = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None,
    reason="pip install --no-deps musicnn==0.1.0 (see pyproject's real-signal extra)",
)


@needs_musicnn
def test_tf_checkpoint_reader_reads_every_musicnn_tensor_with_its_shape():
    from musilingo_cli.model.musicnn import checkpoint_dir
    from musilingo_cli.model.tf_checkpoint import read_tf_checkpoint

    tensors = read_tf_checkpoint(checkpoint_dir("MSD_musicnn"))
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)  # timbral 7 x 0.4 * 96 mel bins, 1.6 * 128 filters
    assert tensors["conv2d_5/kernel"].shape == (7, 561, 1, 64)  # mid end over the 561-wide front end
    assert tensors["dense_1/bias"].shape == (50,)  # 50 MSD tags
    assert tensors["batch_normalization_9/moving_variance"].dtype == np.float32
    assert all(np.isfinite(t).all() for t in tensors.values())


def test_tf_checkpoint_reader_refuses_what_is_not_a_checkpoint(tmp_path):
    from musilingo_cli.model.tf_checkpoint import read_tf_checkpoint

    with pytest.raises(CheckpointError, match="no such TensorFlow checkpoint"):
        read_tf_checkpoint(tmp_path / "model")
    (tmp_path / "model.index").write_bytes(b"\0" * 40 + struct.pack("<Q", 123))
    with pytest.raises(CheckpointError, match="bad table magic"):
        read_tf_checkpoint(tmp_path / "model")


@needs_musicnn
def test_musicnn_tags_rendered_instruments_as_what_they_are():
    rs = pytest.importorskip("real_signal_set")
    if importlib.util.find_spec("tinysoundfont") is None or importlib.util.find_spec("music21") is None:
        pytest.skip("pip install music21 and --no-deps tinysoundfont (see pyproject's real-signal extra)")
    from musilingo_cli.model.musicnn import MTT_LABELS, load_musicnn

    model = load_musicnn("MTT_musicnn")
    events = rs.note_events(str(_chorale()))
    font = rs.soundfonts()["merlin"]
    for instrument in ("piano", "violin"):
        wave = rs.render(events, rs.INSTRUMENTS[instrument], 100, font, 6.0)
        probs = model.tags(torch.from_numpy(wave)[None])[0]
        top = [MTT_LABELS[i] for i in probs.argsort(descending=True)[:3]]
        assert instrument in top, (instrument, top)


def _chorale() -> Path:
    from music21 import corpus

    return next(p for p in corpus.getCorePaths() if p.name == "bwv77.6.mxl")


@needs_musicnn
def test_named_encoder_plugs_into_describe_load_and_training_config():
    from musilingo_cli.model.loader import encoder_info, load_encoder_part
    from musilingo_cli.pipelines.train.config import TrainConfig
    from musilingo_cli.pipelines.train.engine import model_config_for

    info = encoder_info("musicnn-msd")
    assert (info.sample_rate, info.hidden_size, info.num_hidden_states) == (16000, 64, 3)
    assert info.pool_window == 271  # MERT's 325 frames at 75 Hz = 4.33 s = 271 frames at 62.5 Hz
    encoder = load_encoder_part("musicnn-msd")
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 16000 * 3)).astype(np.float32) * 0.1)
    states = encoder(wave)
    assert len(states) == 3 and all(s.shape == (2, encoder.frames(16000 * 3), 64) for s in states)
    assert encoder.frames(256) == 0 and encoder.frames(257) == 2  # the centred STFT needs > 256 samples
    assert not encoder.train().training  # frozen batch norm stays in eval mode
    config, _ = model_config_for(TrainConfig(encoder="musicnn-msd", llm="some-llm"))
    assert (config.pool_window, config.encoder_hidden_size, config.num_hidden_states) == (271, 64, 3)
    explicit, _ = model_config_for(TrainConfig(encoder="musicnn-msd", llm="some-llm", pool_window=8))
    assert explicit.pool_window == 8
