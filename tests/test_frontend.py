"""Audio front-end: shapes, downmix, resampling, windows, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone

from deramos_reward.frontend import batch_to_clips, items_to_clips, plan_windows, resample, to_clips


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("orig", [8_000, 44_100, 96_000, 192_000])
def test_resample_keeps_pitch_length_and_level(orig):
    t = np.arange(orig) / orig  # 1 s
    wave = torch.tensor(0.5 * np.sin(2 * np.pi * 1000.0 * t), dtype=torch.float32)
    out = resample(wave, orig, 24_000).numpy()
    assert out.shape == (24_000,)
    assert abs(_peak_hz(out, 24_000) - 1000.0) <= 1.0
    mid = out[2000:-2000]  # away from the edges, the level is that of the input sine
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resample_matches_polyphase_reference():
    from scipy.signal import resample_poly

    rng = np.random.default_rng(1)
    wave = rng.standard_normal(16_000).astype(np.float64)
    # band-limit first so both resamplers agree on content well below Nyquist
    spec = np.fft.rfft(wave)
    spec[np.fft.rfftfreq(16_000, 1 / 16_000) > 4000] = 0
    wave = np.fft.irfft(spec, 16_000)
    ours = resample(torch.tensor(wave), 16_000, 24_000).numpy()
    ref = resample_poly(wave, 3, 2)
    inner = slice(500, -500)
    assert np.abs(ours[inner] - ref[inner]).max() < 0.02 * np.abs(ref).max()


def test_resample_is_differentiable():
    wave = torch.randn(2, 4410, dtype=torch.float64, requires_grad=True)
    resample(wave, 44_100, 24_000).pow(2).sum().backward()
    assert wave.grad is not None and wave.grad.abs().sum() > 0


def test_downmix_is_channel_mean_and_int16_is_scaled():
    stereo = tone(0.5, 24_000, channels=2)
    clips = to_clips([stereo], 24_000, 24_000)
    np.testing.assert_allclose(clips.waves[0].numpy(), stereo.mean(0), atol=1e-7)
    pcm = (stereo[0] * 32767).astype(np.int16)
    clip = to_clips([pcm], 24_000, 24_000).waves[0].numpy()
    np.testing.assert_allclose(clip, pcm / 32768.0, atol=1e-7)


@pytest.mark.parametrize(
    "shape,count",
    [((24_000,), 1), ((3, 24_000), 3), ((3, 2, 24_000), 3), ((2, 8, 24_000), 2)],
)
def test_batched_shapes(shape, count):
    clips = batch_to_clips(torch.rand(shape) - 0.5, 24_000, 24_000)
    assert len(clips.waves) == count and all(w.shape == (24_000,) for w in clips.waves)


def test_files_carry_their_rate(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, tone(1.0, 48_000, channels=2).T, 48_000)
    clips = items_to_clips([str(path)], None, 24_000)
    assert clips.waves[0].shape == (24_000,)
    with pytest.raises(ValueError, match="48000 Hz but sample_rate=16000"):
        items_to_clips([str(path)], 16_000, 24_000)


def test_plan_windows_cover_every_sample_deterministically():
    windows = plan_windows([10, 25, 31], window=10, hop=5)
    by_clip = {c: [(w.start, w.stop) for w in windows if w.clip == c] for c in range(3)}
    assert by_clip[0] == [(0, 10)]  # a clip that fits is one window, never padded
    assert by_clip[1] == [(0, 10), (5, 15), (10, 20), (15, 25)]
    assert by_clip[2] == [(0, 10), (5, 15), (10, 20), (15, 25), (20, 30), (25, 31)]
    assert windows == plan_windows([10, 25, 31], window=10, hop=5)


@pytest.mark.parametrize(
    "audio,rate,error,match",
    [
        (torch.zeros(2, 0), 24_000, ValueError, "empty"),
        (torch.tensor([[0.0, float("nan"), 0.1]]), 24_000, ValueError, "NaN or Inf"),
        (torch.tensor([[0.0, float("inf"), 0.1]]), 24_000, ValueError, "NaN or Inf"),
        (torch.zeros(1, 1, 1, 100), 24_000, ValueError, r"\[T\], \[B, T\] or \[B, C, T\]"),
        (torch.zeros(2, 100), 4_000, ValueError, "between 8000 and 192000"),
        (torch.zeros(2, 100), 500_000, ValueError, "between 8000 and 192000"),
        (torch.zeros(2, 100), 24_000.5, ValueError, "whole number"),
        (torch.zeros(2, 100), "24k", TypeError, "sample_rate must be an int"),
        (torch.zeros(2, 100, dtype=torch.bool), 24_000, TypeError, "real samples"),
        ("not audio", 24_000, ValueError, "does not exist"),
        ({"a": 1}, 24_000, TypeError, "torch.Tensor, numpy array or file path"),
    ],
)
def test_bad_audio_is_named(audio, rate, error, match):
    with pytest.raises(error, match=match):
        to_clips(audio, rate, 24_000)


def test_bad_items(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    with pytest.raises(ValueError, match=r"audio\[0\].*could not be read|could not be read as audio"):
        items_to_clips([str(bad)], None, 24_000)
    with pytest.raises(ValueError, match="sample_rate must be given"):
        items_to_clips([np.zeros(100, np.float32)], None, 24_000)
    with pytest.raises(ValueError, match="channels-first"):
        items_to_clips([np.zeros((1000, 2), np.float32)], 24_000, 24_000)
    with pytest.raises(ValueError, match="holds no clips"):
        items_to_clips([], 24_000, 24_000)
