"""The `crepe` audio encoder: frames against torchcrepe's own functions, gradients against central
differences, masks, freezing, checkpoints, the feature cache and its errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torchaudio
import torchcrepe  # the [demo] extra, which make test installs: missing means a broken install

import deramos_reward as dr
from deramos_reward.config import AudioEncoderConfig, DeRAMOSConfig, crepe_audio_encoder
from deramos_reward.encoders import build_audio_encoder
from deramos_reward.encoders.crepe import CREPE_STAGES, stage_dim
from deramos_reward.errors import InputError, MissingExtraError

SR = 16_000


def tones(seconds: float, batch: int = 1, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Harmonic tones with a little noise: [batch, T] at 16 kHz."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    f0 = 150.0 + 400.0 * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    x = sum(0.3 / k * torch.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
    x = x + 0.02 * torch.randn(batch, t.shape[0], generator=g, dtype=torch.float64)
    return x.to(dtype)


@pytest.fixture(scope="module")
def encoder():
    return build_audio_encoder(crepe_audio_encoder())


@pytest.fixture(scope="module")
def crepe_model():
    """The tiny test judge (random tiny RoBERTa text tower) on pretrained CREPE-tiny frames."""
    cfg = DeRAMOSConfig.tiny()
    cfg.audio_encoder = crepe_audio_encoder()
    torch.manual_seed(0)
    return dr.DeRAMOS(cfg).eval()


def test_conv5_frames_equal_torchcrepe_embed(encoder):
    wave = tones(1.0)
    ours = build_audio_encoder(crepe_audio_encoder(layer=4, mel_bands=0))(wave).frames
    reference = torchcrepe.embed(wave, SR, hop_length=640, model="tiny", device="cpu")  # [1, N, 32, 8]
    torch.testing.assert_close(ours, reference.reshape(1, reference.shape[1], -1), atol=1e-5, rtol=1e-4)


def test_pitch_stage_equals_torchcrepe_activations():
    wave = tones(0.5, seed=1)
    ours = build_audio_encoder(crepe_audio_encoder(layer=-1, mel_bands=0))(wave).frames[0]
    reference = torchcrepe.infer(next(torchcrepe.preprocess(wave, SR, 640)), "tiny")  # [N, 360]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_appended_bands_equal_torchaudio_log_mel(encoder):
    """The last mel_bands values of a frame: torchaudio's MelSpectrogram of the same 16 kHz wave, in dB,
    scaled by (dB + 20) / 30; the stage's values before them are unchanged."""
    wave = tones(1.0, seed=2)
    frames = encoder(wave).frames[0]
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=1024, hop_length=640, n_mels=64)(wave)[0].T
    torch.testing.assert_close(
        frames[:, -64:], (10 * mel.clamp_min(1e-10).log10() + 20) / 30, atol=1e-4, rtol=1e-4
    )
    plain = build_audio_encoder(crepe_audio_encoder(mel_bands=0))(wave).frames[0]
    torch.testing.assert_close(frames[:, :-64], plain)


@pytest.mark.parametrize("layer", range(-len(CREPE_STAGES), len(CREPE_STAGES)))
def test_frames_at_25_hz_with_the_stage_width(layer):
    enc = build_audio_encoder(crepe_audio_encoder(layer=layer, mel_bands=8))
    out = enc(tones(0.3, batch=2), torch.tensor([4800, 1500]))
    assert out.frames.shape == (2, 1 + 4800 // 640, stage_dim("tiny", layer) + 8) == (2, 8, enc.dim)
    assert out.mask.sum(1).tolist() == [8, 1 + 1500 // 640]


def test_gradient_matches_central_differences_float64(encoder):
    enc = build_audio_encoder(crepe_audio_encoder()).double()
    wave = tones(0.2, dtype=torch.float64).requires_grad_(True)
    weights = torch.randn(
        enc(wave).frames.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )

    def f(x):
        return (enc(x).frames * weights).sum()

    (grad,) = torch.autograd.grad(f(wave), wave)
    assert grad.abs().sum() > 0
    g = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(3):
        d = torch.randn(wave.shape, generator=g, dtype=torch.float64)
        d /= d.norm()
        with torch.no_grad():
            numeric = float((f(wave + eps * d) - f(wave - eps * d)) / (2 * eps))
        assert numeric == pytest.approx(float((grad * d).sum()), rel=1e-4, abs=1e-6)


def test_a_silent_stretch_has_a_finite_gradient(crepe_model):
    """A clip shorter than min_samples is zero-padded; its all-zero windows must not give NaN."""
    wave = tones(0.4).requires_grad_(True)
    out = crepe_model(wave, ["a calm piano piece"])
    (out.mi + out.ta).sum().backward()
    assert torch.isfinite(wave.grad).all() and wave.grad.abs().sum() > 0
    for name, p in crepe_model.audio_encoder.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    crepe_model.heads.zero_grad(set_to_none=True)


def test_frozen_and_eval_in_train_mode(crepe_model):
    crepe_model.train()
    try:
        assert not crepe_model.audio_encoder.backbone.training
        assert all(not m.training for m in crepe_model.audio_encoder.backbone.modules())
    finally:
        crepe_model.eval()


def test_checkpoint_keeps_only_the_heads_and_round_trips(crepe_model, tmp_path):
    crepe_model.save_pretrained(tmp_path / "judge")
    loaded = dr.DeRAMOS.from_pretrained(tmp_path / "judge")
    assert not any(k.startswith("audio_encoder.") for k in loaded._saved_state())
    wave, prompts = tones(1.2, batch=2, seed=3), ["slow organ", "fast flute"]
    with torch.no_grad():
        a, b = crepe_model(wave, prompts), loaded(wave, prompts)
    torch.testing.assert_close(a.mi, b.mi)
    torch.testing.assert_close(a.ta, b.ta)


def test_cached_features_equal_the_encoder_frames(crepe_model, tmp_path):
    import soundfile as sf

    from deramos_reward.data import Example
    from deramos_reward.training import cached_feature_set

    waves = tones(1.5, batch=2, seed=4)
    examples = []
    for i, w in enumerate(waves):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, w.numpy(), SR, subtype="FLOAT")
        examples.append(Example(f"clip{i}", str(path), "a prompt", 3.0, 3.0, "S001"))
    first = cached_feature_set(crepe_model, examples, tmp_path / "cache", "x", progress=False)
    again = cached_feature_set(crepe_model, examples, tmp_path / "cache", "x", progress=False)
    with torch.no_grad():
        frames = crepe_model.audio_encoder(waves).frames
    torch.testing.assert_close(first.features.frames, frames.reshape(-1, frames.shape[-1]))
    torch.testing.assert_close(again.features.frames, first.features.frames)
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"name_or_path": "torchcrepe/huge"}, "must be one of"),
        ({"name_or_path": None, "backbone": {"capacity": "tiny"}}, "pretrained"),
        ({"sample_rate": 24_000}, "16000"),
        ({"mel_bands": -1}, "mel_bands"),
        ({"kind": "muq", "name_or_path": "m", "sample_rate": 24_000}, "mel_bands"),
    ],
)
def test_bad_configs_are_named(changes, match):
    cfg = AudioEncoderConfig(**{**crepe_audio_encoder().__dict__, **changes})
    with pytest.raises(InputError, match=match):
        cfg.validate()


def test_a_layer_outside_the_stages_is_refused():
    with pytest.raises(InputError, match="layer"):
        build_audio_encoder(crepe_audio_encoder(layer=len(CREPE_STAGES)))


def test_missing_torchcrepe_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcrepe", None)  # import torchcrepe now raises ImportError
    with pytest.raises(MissingExtraError, match=r"deramos-reward\[demo\]"):
        build_audio_encoder(crepe_audio_encoder())
