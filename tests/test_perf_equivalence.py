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


def _reference_pattern(model, waves, prompts):
    """The authors' call pattern: pad/crop to the window, one clip per forward, prompt re-encoded."""
    n = model.window_samples
    out = []
    with torch.no_grad():
        for wave, prompt in zip(waves, prompts):
            x = torch.nn.functional.pad(wave[:n], (0, max(0, n - wave.shape[0])))
            text = model.text_encoder.encode([prompt])
            scores = model.heads(model.audio_encoder(x[None]), text)
            out.append((float(scores.mi[0]), float(scores.ta[0])))
    return out


def test_batched_scoring_equals_the_reference_pattern_for_unpadded_clips():
    import deramos_reward as dr
    from deramos_reward.prompt_cache import PromptCache

    torch.manual_seed(0)
    cfg = dr.DeRAMOSConfig.tiny()
    cfg.audio_encoder.window_seconds, cfg.audio_encoder.hop_seconds = 1.5, 1.0
    model = dr.DeRAMOS(cfg).eval()
    waves = [torch.tensor(tone(1.5, SR, 200 + 150 * i, seed=i)) for i in range(5)]  # exactly one window
    prompts = ["calm piano", "fast drums", "calm piano", "dark ambient drone", "fast drums"]
    cache = PromptCache(model.text_encoder)
    rows = dr.score(model, waves, prompts, sample_rate=SR, batch_size=4, prompt_cache=cache)
    reference = _reference_pattern(model, waves, prompts)
    for row, (mi, ta) in zip(rows, reference):
        assert abs(row["mi"] - mi) < 1e-5 and abs(row["ta"] - ta) < 1e-5
    assert cache.encoded_count == 3  # each distinct prompt encoded once, not once per clip
    # a shorter clip is scored unpadded, so it differs from the padded reference
    short = [waves[0][: SR // 2]]
    (row,) = dr.score(model, short, prompts[:1], sample_rate=SR)
    ((mi, _),) = _reference_pattern(model, short, prompts[:1])
    assert abs(row["mi"] - mi) > 1e-6


def test_scores_are_the_model_outputs_as_python_floats(tiny_model):
    import deramos_reward as dr

    waves = [torch.tensor(tone(s, SR, 300, seed=i)) for i, s in enumerate((0.7, 1.2, 0.7))]
    rows = dr.score(tiny_model, waves, ["a", "b", "c"], sample_rate=SR, batch_size=2)
    with torch.no_grad():
        direct = tiny_model(waves, ["a", "b", "c"])
    assert all(isinstance(r["mi"], float) and isinstance(r["ta"], float) for r in rows)
    torch.testing.assert_close(torch.tensor([r["mi"] for r in rows]), direct.mi, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor([r["ta"] for r in rows]), direct.ta, atol=1e-6, rtol=0)
