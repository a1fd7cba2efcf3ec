"""musicnn (Pons & Serra, 2019: "musicnn: pre-trained convolutional neural networks for music
audio tagging", arXiv:1909.06654) in PyTorch, with the weights the `musicnn` PyPI wheel ships.

The wheel holds TensorFlow 1 checkpoints (`musicnn/MSD_musicnn/`, `musicnn/MTT_musicnn/`); they
are read as plain tensors (tf_checkpoint.py), never by importing the package, which needs
TensorFlow. The graph below is the wheel's `models.build_musicnn` with `num_filt_midend=64`:

    wave [B, S] at 16 kHz
      -> log-mel: |STFT|^2 (n_fft 512, hop 256, Hann, centred, reflect pad) x 96 Slaney mel bands,
         log10(10000 * mel + 1)                                      [B, T, 96], 62.5 frames/s
      -> batch norm -> front end: timbral convs 7x38 and 7x67 (204 filters each) and temporal
         convs 128x1, 64x1, 32x1 (51 each), each ReLU -> BN -> max over frequency   [B, T, 561]
      -> mid end: three 7-frame convs of 64 (ReLU -> BN), the last two residual:
         cnn1, cnn2, cnn3                                                       3 x [B, T, 64]
      -> (tagging back end: max and mean over time, dense 200, dense 50 tags: `tags`)

The per-frame states cnn1..cnn3 have equal widths, so they serve as the encoder's hidden states.
The wheel's extractor rounds the mel spectrogram to float16, which overflows on loud input;
we keep float32.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musilingo_cli.core.errors import CheckpointError
from musilingo_cli.model.tf_checkpoint import read_tf_checkpoint

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
FRAME_RATE = SAMPLE_RATE / HOP  # 62.5 frames per second
MIDEND = 64
MSD_LABELS = (
    "rock,pop,alternative,indie,electronic,female vocalists,dance,00s,alternative rock,jazz,beautiful,metal,"
    "chillout,male vocalists,classic rock,soul,indie rock,Mellow,electronica,80s,folk,90s,chill,instrumental,punk,"
    "oldies,blues,hard rock,ambient,acoustic,experimental,female vocalist,guitar,Hip-Hop,70s,party,country,"
    "easy listening,sexy,catchy,funk,electro,heavy metal,Progressive rock,60s,rnb,indie pop,sad,House,happy"
).split(",")
MTT_LABELS = (
    "guitar,classical,slow,techno,strings,drums,electronic,rock,fast,piano,ambient,beat,violin,vocal,synth,female,"
    "indian,opera,male,singing,vocals,no vocals,harpsichord,loud,quiet,flute,woman,male vocal,no vocal,pop,soft,"
    "sitar,solo,man,classic,choir,voice,new age,dance,male voice,female vocal,beats,harp,cello,no voice,weird,"
    "country,metal,female voice,choral"
).split(",")


def slaney_mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (Slaney mel scale, Slaney area
    normalisation, 0 Hz to Nyquist): [n_mels, n_fft // 2 + 1] float64."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        linear = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, linear)

    def mel_to_hz(m):
        linear = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, linear)

    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


class Musicnn(nn.Module):
    """musicnn with a 64-filter mid end. `forward`: waves [B, S] at 16 kHz -> (cnn1, cnn2, cnn3),
    each [B, T, 64] with T = 1 + S // 256 (S must exceed 256 samples)."""

    def __init__(self, num_tags: int = 50):
        super().__init__()
        self.register_buffer("mel_filters", torch.from_numpy(slaney_mel_filters()).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.input_bn = nn.BatchNorm2d(1, eps=1e-3)
        self.timbral = nn.ModuleList([nn.Conv2d(1, 204, (7, 38)), nn.Conv2d(1, 204, (7, 67))])
        self.timbral_bn = nn.ModuleList([nn.BatchNorm2d(204, eps=1e-3) for _ in range(2)])
        self.temporal = nn.ModuleList([nn.Conv2d(1, 51, (k, 1)) for k in (128, 64, 32)])
        self.temporal_bn = nn.ModuleList([nn.BatchNorm2d(51, eps=1e-3) for _ in range(3)])
        self.midend = nn.ModuleList(
            [nn.Conv1d(561, MIDEND, 7, padding=3)] + [nn.Conv1d(MIDEND, MIDEND, 7, padding=3) for _ in range(2)]
        )
        self.midend_bn = nn.ModuleList([nn.BatchNorm1d(MIDEND, eps=1e-3) for _ in range(3)])
        self.pool_bn = nn.BatchNorm1d(2 * (561 + 3 * MIDEND), eps=1e-3)
        self.dense = nn.Linear(2 * (561 + 3 * MIDEND), 200)
        self.dense_bn = nn.BatchNorm1d(200, eps=1e-3)
        self.logits = nn.Linear(200, num_tags)

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """waves [B, S] -> log10(10000 * mel + 1) [B, T, 96] in float32."""
        spec = (
            torch.stft(
                waves.float(),
                N_FFT,
                HOP,
                window=self.window.float(),
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            .abs()
            .pow(2)
        )  # [B, 257, T]
        return torch.log10(10000.0 * (self.mel_filters.float() @ spec) + 1.0).transpose(1, 2)

    def front_and_mid(self, waves: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """waves [B, S] -> front end [B, 561, T] and the mid-end states 3 x [B, 64, T]."""
        x = self.input_bn(self.log_mel(waves).to(self.input_bn.weight.dtype).unsqueeze(1))  # [B, 1, T, 96]
        padded = F.pad(x, (0, 0, 3, 3))
        front = [bn(F.relu(conv(padded))).amax(-1) for conv, bn in zip(self.timbral, self.timbral_bn)]
        for conv, bn in zip(self.temporal, self.temporal_bn):  # TF "same": the odd extra pad goes last
            k = conv.kernel_size[0]
            front.append(bn(F.relu(conv(F.pad(x, (0, 0, (k - 1) // 2, k // 2))))).amax(-1))
        h = torch.cat(front, dim=1)  # [B, 561, T]
        states = []
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn)):
            y = bn(F.relu(conv(states[-1] if states else h)))
            states.append(y if i == 0 else y + states[-1])
        return h, tuple(states)

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, states = self.front_and_mid(waves)
        return tuple(s.transpose(1, 2) for s in states)

    def tags(self, waves: torch.Tensor) -> torch.Tensor:
        """Tag probabilities over the whole clip: waves [B, S] -> [B, 50] (sigmoid of the logits)."""
        front, states = self.front_and_mid(waves)
        feats = torch.cat([front, *states], dim=1)  # [B, 753, T]
        pooled = torch.stack([feats.amax(-1), feats.mean(-1)], dim=-1).flatten(1)  # TF's interleaved [max, mean]
        hidden = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return torch.sigmoid(self.logits(hidden))


def checkpoint_dir(variant: str) -> Path:
    """The wheel's checkpoint folder for `variant` (MSD_musicnn or MTT_musicnn); nothing is imported."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the musicnn weights are not installed: pip install --no-deps musicnn==0.1.0 "
            "(only its checkpoint files are read; TensorFlow is not needed)"
        )
    directory = Path(spec.submodule_search_locations[0]) / variant
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: the musicnn wheel has no {variant} checkpoint")
    return directory


def load_musicnn(variant: str = "MSD_musicnn") -> Musicnn:
    """A Musicnn in eval mode with the wheel's `variant` weights (Adam slots are skipped)."""
    tensors = read_tf_checkpoint(checkpoint_dir(variant))
    model = Musicnn()

    def bn(module: nn.Module, index: int) -> dict[str, np.ndarray]:
        name = "batch_normalization" + (f"_{index}" if index else "")
        keys = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
        return {f"{_path(model, module)}.{k}": tensors[f"{name}/{v}"] for k, v in keys.items()}

    def conv(module: nn.Module, index: int, layout: str) -> dict[str, np.ndarray]:
        name = "conv2d" + (f"_{index}" if index else "")
        kernel = tensors[f"{name}/kernel"]  # TF [kh, kw, in, out]
        weight = kernel.transpose(3, 2, 0, 1) if layout == "2d" else kernel[:, :, 0, :].transpose(2, 1, 0)
        return {f"{_path(model, module)}.weight": weight, f"{_path(model, module)}.bias": tensors[f"{name}/bias"]}

    try:
        state = {**bn(model.input_bn, 0), **bn(model.pool_bn, 9), **bn(model.dense_bn, 10)}
        for i in range(2):
            state.update({**conv(model.timbral[i], i, "2d"), **bn(model.timbral_bn[i], i + 1)})
        for i in range(3):
            state.update({**conv(model.temporal[i], i + 2, "2d"), **bn(model.temporal_bn[i], i + 3)})
            state.update({**conv(model.midend[i], i + 5, "1d"), **bn(model.midend_bn[i], i + 6)})
        for module, name in ((model.dense, "dense"), (model.logits, "dense_1")):
            state[f"{_path(model, module)}.weight"] = tensors[f"{name}/kernel"].T
            state[f"{_path(model, module)}.bias"] = tensors[f"{name}/bias"]
    except KeyError as err:
        raise CheckpointError(
            f"{variant}: the checkpoint lacks tensor {err.args[0]!r}; not a musicnn checkpoint"
        ) from None
    own = model.state_dict()
    for key, value in state.items():
        if tuple(own[key].shape) != value.shape:
            raise CheckpointError(f"{variant}: {key} has shape {value.shape}, the model needs {tuple(own[key].shape)}")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{variant}: no weights for {missing}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    return model.eval().requires_grad_(False)


def _path(root: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is module)


def frames(num_samples: int) -> int:
    """Frames of a clip of `num_samples` samples (centred STFT; reflect padding needs > 256 samples)."""
    return 1 + num_samples // HOP if num_samples > N_FFT // 2 else 0


def seconds_to_frames(seconds: float) -> int:
    """Frames in `seconds` at 62.5 frames/s, rounded (MERT's 325-frame window, 4.33 s, is 271)."""
    return int(math.floor(seconds * FRAME_RATE + 0.5))
