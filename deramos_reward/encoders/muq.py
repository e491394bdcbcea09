"""MuQ audio encoder with a differentiable front-end.

``MuQ.forward`` computes its mel spectrogram, normalisation and input layout under
``torch.no_grad``, so no gradient reaches the waveform. This wrapper computes those steps itself
(the same torchaudio transforms: 24 kHz, n_fft 2048, hop 240, 128 mels, power-to-dB, MuQ's
stats) and then calls MuQ's own conv subsampling and conformer.
"""

from __future__ import annotations

import math

import torch
import torchaudio

from .._optional import require
from ..config import AudioEncoderConfig
from .base import AudioEncoder, AudioFrames
from .loading import MUQ_HUB_ID, load_backbone


def conformer_config(w2v2: dict) -> dict:
    """A conformer config dict MuQ can build: transformers' defaults + the given keys."""
    from transformers import Wav2Vec2ConformerConfig

    cfg = Wav2Vec2ConformerConfig(**w2v2).to_dict()
    for key in ("id2label", "label2id"):  # easydict cannot hold int keys
        cfg.pop(key, None)
    return cfg


def build_muq(backbone: dict):
    """A randomly initialised ``muq.MuQ`` from a MuQConfig dict (no downloads)."""
    muq = require("muq")
    cfg = dict(backbone)
    cfg["w2v2_config"] = conformer_config(cfg.get("w2v2_config", {}))
    torch_state = torch.random.get_rng_state()
    model = muq.MuQ(muq.MuQConfig(**cfg))
    torch.random.set_rng_state(torch_state)  # MuQ seeds Python's RNG; keep torch's stream ours
    return model


class MuQEncoder(AudioEncoder):
    """MuQ frames (25 Hz) from 24 kHz mono audio.

    Input wave [B, T] -> frames [B, ceil(floor(T / 240) / 4), encoder_dim].
    """

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        if config.name_or_path is not None:
            muq = require("muq")
            self.backbone = load_backbone(
                config.name_or_path, muq.MuQ.from_pretrained, "MuQ audio encoder", hub_id=MUQ_HUB_ID
            )
        else:
            self.backbone = build_muq(config.backbone)
        inner = self.backbone.model
        if config.sample_rate != 24_000:
            raise ValueError(f"audio_encoder.sample_rate must be 24000 for MuQ, got {config.sample_rate}")
        self.sample_rate = 24_000
        self.hop = inner.hop_length
        self.n_fold = inner.n_fold
        self.dim = inner.conformer.config.hidden_size
        self.layer = config.layer
        self.min_samples = max(int(config.min_seconds * self.sample_rate), self.hop * self.n_fold * 2)
        n_mels = inner.preprocessor_melspec_2048.mel_stft.n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=24_000, n_fft=2048, hop_length=self.hop, n_mels=n_mels
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB()
        stat = inner.stat
        self.mel_mean = float(stat["melspec_2048_mean"])
        self.mel_std = float(stat["melspec_2048_std"])
        self.freeze()

    def num_frames(self, num_samples: int) -> int:
        mel_frames = num_samples // self.hop  # MuQ drops the last STFT frame
        return math.ceil(math.ceil(mel_frames / 2) / (self.n_fold // 2))

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] -> normalised dB mel [B, n_mels, floor(T / hop)] (differentiable).

        Computed in the dtype of the mel buffers (float32, or float64 after ``.double()``) with
        autocast off, so bf16 autocast never rounds the spectrogram.
        """
        window = self.mel.spectrogram.window
        with torch.autocast(wave.device.type, enabled=False):
            # = torchaudio's MelSpectrogram(power=2) minus the frame MuQ drops, with |X|^2 taken as
            # re^2 + im^2: complex abs() + pow(2) is several times slower on the CPU.
            spec = torch.stft(
                wave.to(window.dtype),
                n_fft=self.mel.spectrogram.n_fft,
                hop_length=self.mel.spectrogram.hop_length,
                win_length=self.mel.spectrogram.win_length,
                window=window,
                center=True,
                pad_mode="reflect",
                normalized=False,
                onesided=True,
                return_complex=True,
            )[..., :-1]
            power = spec.real.square() + spec.imag.square()  # [B, n_freqs, frames]
            mel = torch.matmul(power.transpose(-1, -2), self.mel.mel_scale.fb).transpose(-1, -2)
            mel = self.to_db(mel)
        return (mel - self.mel_mean) / self.mel_std

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> AudioFrames:
        inner = self.backbone.model
        x = inner.conv(self.features(wave).to(next(inner.conv.parameters()).dtype))
        out = inner.conformer(x, output_hidden_states=True)
        frames = out["hidden_states"][self.layer]
        n = frames.shape[1]
        if lengths is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        else:
            valid = torch.tensor([max(1, self.num_frames(int(t))) for t in lengths], device=frames.device)
            mask = torch.arange(n, device=frames.device)[None, :] < valid[:, None]
        return AudioFrames(frames, mask)
