"""Optimised code paths give the same numbers as the plain computations they replace."""

from __future__ import annotations

import torch
import torchaudio
from conftest import tone

SR = 24_000


def _torchaudio_features(encoder, wave: torch.Tensor) -> torch.Tensor:
    """The plain front-end: torchaudio MelSpectrogram (complex abs, power 2) + AmplitudeToDB."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=2048, hop_length=240, n_mels=128)
    mel = mel.to(wave.dtype)
    db = torchaudio.transforms.AmplitudeToDB()(mel(wave))[..., :-1]
    return (db - encoder.mel_mean) / encoder.mel_std


def test_mel_features_match_torchaudio(tiny_model):
    encoder = tiny_model.audio_encoder
    wave = torch.stack([torch.tensor(tone(1.3, SR, f, seed=i)) for i, f in enumerate((220, 3_000))])
    ours = encoder.features(wave)
    plain = _torchaudio_features(encoder, wave)
    assert ours.shape == plain.shape == (2, 128, wave.shape[1] // 240)
    torch.testing.assert_close(ours, plain, atol=2e-5, rtol=1e-5)


def test_mel_features_match_torchaudio_in_float64_and_gradients_agree(tiny_model):
    encoder = tiny_model.audio_encoder
    encoder.double()
    try:
        wave = torch.tensor(tone(0.4, SR, 500), dtype=torch.float64)[None].requires_grad_(True)
        ours = encoder.features(wave)
        plain = _torchaudio_features(encoder, wave)
        torch.testing.assert_close(ours, plain, atol=1e-10, rtol=1e-10)
        weights = torch.randn(ours.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        (g_ours,) = torch.autograd.grad((ours * weights).sum(), wave)
        (g_plain,) = torch.autograd.grad((plain * weights).sum(), wave)
        torch.testing.assert_close(g_ours, g_plain, atol=1e-9, rtol=1e-7)
    finally:
        encoder.float()
