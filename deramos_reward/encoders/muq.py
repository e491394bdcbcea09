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
from .muq_fast import can_fold, sdpa_compatible, subsample, use_sdpa


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

    Two fast paths, on by default, compute the same frames up to float rounding (``muq_fast``):
    ``folded_subsampling`` runs the conv subsampling with BatchNorm folded into the convolutions,
    ``sdpa_attention`` the conformer's self-attention through PyTorch SDPA. ``fast_paths = False``
    turns both off (MuQ's and transformers' own modules).
    Casting the encoder to a half type (``.to(torch.bfloat16)``) casts MuQ's weights; the mel
    front-end still runs in float32.
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
        # plain list: the modules stay registered once, under the backbone
        self._attention = [m for m in inner.conformer.modules() if sdpa_compatible(m)]
        self.folded_subsampling = True
        self.sdpa_attention = True
        self._subsample = subsample  # compile_backbone swaps in a compiled version

    @property
    def sdpa_attention(self) -> bool:
        """Conformer self-attention through PyTorch SDPA (True) or transformers' own code (False)."""
        return self._sdpa

    @sdpa_attention.setter
    def sdpa_attention(self, enabled: bool) -> None:
        self._sdpa = bool(enabled)
        for attn in self._attention:
            use_sdpa(attn, self._sdpa)

    @property
    def fast_paths(self) -> bool:
        """Both fast paths on: ``folded_subsampling`` and ``sdpa_attention``; setting sets both."""
        return self.folded_subsampling and self.sdpa_attention

    @fast_paths.setter
    def fast_paths(self, enabled: bool) -> None:
        self.folded_subsampling = self.sdpa_attention = bool(enabled)

    def compile_backbone(self, **compile_kwargs) -> None:
        """``torch.compile`` the conv subsampling (both paths) and each conformer layer, in place.

        The conformer's own forward stays eager: it caches its rotary table in module attributes,
        which would make every change of clip length recompile.
        """
        inner = self.backbone.model
        self._subsample = torch.compile(subsample, **compile_kwargs)
        inner.conv.compile(**compile_kwargs)
        for layer in inner.conformer.layers:
            layer.compile(**compile_kwargs)

    def num_frames(self, num_samples: int) -> int:
        mel_frames = num_samples // self.hop  # MuQ drops the last STFT frame
        return math.ceil(math.ceil(mel_frames / 2) / (self.n_fold // 2))

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] -> normalised dB mel [B, n_mels, floor(T / hop)] (differentiable).

        Computed in float64 after ``.double()``, else in float32 (also when the encoder was cast to
        a half type), with autocast off, so bf16 never rounds the spectrogram.
        """
        spectrogram = self.mel.spectrogram
        dtype = torch.float64 if spectrogram.window.dtype == torch.float64 else torch.float32
        window, fb = spectrogram.window.to(dtype), self.mel.mel_scale.fb.to(dtype)
        with torch.autocast(wave.device.type, enabled=False):
            # = torchaudio's MelSpectrogram(power=2) minus the frame MuQ drops, with |X|^2 taken as
            # re^2 + im^2: complex abs() + pow(2) is several times slower on the CPU.
            spec = torch.stft(
                wave.to(dtype),
                n_fft=spectrogram.n_fft,
                hop_length=spectrogram.hop_length,
                win_length=spectrogram.win_length,
                window=window,
                center=True,
                pad_mode="reflect",
                normalized=False,
                onesided=True,
                return_complex=True,
            )[..., :-1]
            power = spec.real.square() + spec.imag.square()  # [B, n_freqs, frames]
            mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)
            mel = self.to_db(mel)
        return (mel - self.mel_mean) / self.mel_std

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> AudioFrames:
        inner = self.backbone.model
        mel = self.features(wave).to(next(inner.conv.parameters()).dtype)
        x = (
            self._subsample(inner.conv, mel)
            if self.folded_subsampling and can_fold(inner.conv)
            else inner.conv(mel)
        )
        _drop_stale_rotary_cache(inner.conformer, x)
        out = inner.conformer(x, output_hidden_states=True)
        frames = out["hidden_states"][self.layer]
        n = frames.shape[1]
        if lengths is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        else:
            valid = torch.tensor([max(1, self.num_frames(int(t))) for t in lengths], device=frames.device)
            mask = torch.arange(n, device=frames.device)[None, :] < valid[:, None]
        return AudioFrames(frames, mask)


def _drop_stale_rotary_cache(conformer: torch.nn.Module, x: torch.Tensor) -> None:
    """Forget the conformer's cached rotary table unless it suits ``x`` [B, N, D].

    transformers' rotary embedding caches cos/sin by sequence length only, so after a dtype cast, a
    device move, a bf16-autocast call or an ``inference_mode`` call it would hand back a table of the
    wrong dtype or device, bf16-rounded, or an inference tensor that autograd refuses to save.
    """
    rotary = getattr(conformer, "embed_positions", None)
    cached = getattr(rotary, "cached_rotary_positional_embedding", None)
    if not isinstance(cached, torch.Tensor):
        return
    stale_inference = cached.is_inference() and not torch.is_inference_mode_enabled()
    if cached.dtype != x.dtype or cached.device != x.device or stale_inference:
        rotary.cached_rotary_positional_embedding = None
