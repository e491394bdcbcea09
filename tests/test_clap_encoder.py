"""The `clap` encoders: torch front-end against transformers' numpy ClapFeatureExtractor,
frames against the ClapModel audio tower, gradients, masks, shapes, freezing, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor, ClapModel

import deramos_reward as dr
from deramos_reward.config import AudioEncoderConfig, DeRAMOSConfig, TextEncoderConfig
from deramos_reward.encoders import build_audio_encoder, build_text_encoder
from deramos_reward.encoders.clap import (
    LAION_CLAP_FEATURES,
    TINY_CLAP_BACKBONE,
    ClapAudioEncoder,
    ClapMelFeatures,
    ClapTextEncoder,
    clap_config,
)
from deramos_reward.encoders.tokenizer import byte_level_tokenizer

SR = 48_000
# Tolerance on log-mel values in dB. The reference keeps its STFT in complex64, so it carries
# float32 rounding (relative ~1e-7 per value, accumulated over a 1024-point FFT); 10*log10(1+e)
# ~ 4.3 e dB, measured max difference ~1e-4 dB (the same with a float64 torch path). 1e-3 dB leaves
# 10x margin, while a wrong setting (f_min, filter scale, padding) moves values by > 0.1 dB (checked).
MEL_ATOL_DB = 1e-3


def noise(seconds: float, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * scale).astype(np.float32)


def audio_config(**kw) -> AudioEncoderConfig:
    base = dict(
        kind="clap",
        name_or_path=None,
        backbone=dict(TINY_CLAP_BACKBONE),
        sample_rate=SR,
        window_seconds=10.0,
        hop_seconds=5.0,
    )
    base.update(kw)
    return AudioEncoderConfig(**base)


@pytest.fixture(scope="module")
def audio_encoder() -> ClapAudioEncoder:
    torch.manual_seed(0)
    return build_audio_encoder(DeRAMOSConfig.tiny("clap").audio_encoder)


@pytest.fixture(scope="module")
def text_encoder() -> ClapTextEncoder:
    torch.manual_seed(0)
    return build_text_encoder(DeRAMOSConfig.tiny("clap").text_encoder)


@pytest.fixture(scope="module")
def saved_clap(tmp_path_factory):
    """A tiny ClapModel folder like a hub download: weights, preprocessor config, tokenizer."""
    torch.manual_seed(1)
    model = ClapModel(clap_config(TINY_CLAP_BACKBONE)).eval()
    path = tmp_path_factory.mktemp("clap") / "tiny-clap"
    model.save_pretrained(path)
    ClapFeatureExtractor(**LAION_CLAP_FEATURES).save_pretrained(path)
    byte_level_tokenizer().save_pretrained(path)
    return model, str(path)


def torch_mel(extractor: ClapFeatureExtractor, x: np.ndarray, fusion: bool = False) -> np.ndarray:
    feats = ClapMelFeatures(extractor, fusion=fusion)
    wave = torch.from_numpy(x)[None]
    return feats(wave, torch.tensor([wave.shape[1]])).numpy()


# ---- front-end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", [3.0, 10.0, 4.1])
@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
def test_mel_matches_feature_extractor(seconds, padding):
    extractor = ClapFeatureExtractor(**{**LAION_CLAP_FEATURES, "padding": padding})
    x = noise(seconds, seed=int(seconds * 10))
    ref = extractor(x, sampling_rate=SR, return_tensors="np")["input_features"]  # [1, 1, 1001, 64]
    ours = torch_mel(extractor, x)
    assert ours.shape == ref.shape == (1, 1, 1001, 64)
    np.testing.assert_allclose(ours, ref, atol=MEL_ATOL_DB, rtol=0)


def test_mel_tolerance_detects_wrong_settings():
    x = noise(3.0)
    ref = ClapFeatureExtractor(**LAION_CLAP_FEATURES)(x, sampling_rate=SR, return_tensors="np")
    ref = ref["input_features"]
    for wrong in ({"frequency_min": 0}, {"padding": "pad"}):
        other = torch_mel(ClapFeatureExtractor(**{**LAION_CLAP_FEATURES, **wrong}), x)
        assert np.abs(other - ref).max() > 100 * MEL_ATOL_DB, wrong
    htk = torch_mel(ClapFeatureExtractor(**LAION_CLAP_FEATURES), x, fusion=True)[:, :1]
    assert np.abs(htk - ref).max() > 100 * MEL_ATOL_DB


def test_mel_fusion_path_matches_feature_extractor():
    """Fused models: HTK filters without norm, the mel stacked 4 times (clips <= 10 s)."""
    extractor = ClapFeatureExtractor(**{**LAION_CLAP_FEATURES, "truncation": "fusion"})
    x = noise(2.5, seed=3)
    ref = extractor(x, sampling_rate=SR, return_tensors="np")["input_features"]  # [1, 4, 1001, 64]
    ours = torch_mel(extractor, x, fusion=True)
    assert ours.shape == ref.shape == (1, 4, 1001, 64)
    np.testing.assert_allclose(ours, ref, atol=MEL_ATOL_DB, rtol=0)


def test_mel_ignores_top_db_like_the_extractor():
    """The extractor stores top_db but never applies it; the torch path matches that."""
    extractor = ClapFeatureExtractor(**{**LAION_CLAP_FEATURES, "top_db": 30})
    x = noise(2.0, seed=1, scale=1e-3)
    ref = extractor(x, sampling_rate=SR, return_tensors="np")["input_features"]
    ours = torch_mel(extractor, x)
    np.testing.assert_allclose(ours, ref, atol=MEL_ATOL_DB, rtol=0)
    assert ours.max() - ours.min() > 30.0


# ---- audio encoder ------------------------------------------------------------------------------
def test_frames_equal_clap_audio_tower_on_extractor_features(saved_clap):
    """Loaded from a ClapModel folder, the encoder's frames are the tower's last hidden state
    (fed the numpy extractor's features) averaged over frequency rows, in time order."""
    model, path = saved_clap
    enc = ClapAudioEncoder(audio_config(name_or_path=path, backbone=None))
    x = noise(3.0, seed=5)
    feats = ClapFeatureExtractor.from_pretrained(path)(x, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        hidden = model.audio_model(**feats).last_hidden_state  # [1, C, F', N]
        ours = enc(torch.from_numpy(x)[None]).frames
    expected = hidden.mean(dim=2).transpose(1, 2)
    assert ours.shape == expected.shape == (1, 128, 32)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_fused_backbone_frames_match_extractor_fusion_features():
    """A fused CLAP tower gets 4 stacked HTK mels and no 'longer' flags (clips are <= 10 s)."""
    backbone = json.loads(json.dumps(TINY_CLAP_BACKBONE))
    backbone["audio_config"].update(enable_fusion=True, fusion_type="aff_2d")
    torch.manual_seed(2)
    enc = ClapAudioEncoder(audio_config(backbone=backbone))
    x = noise(2.0, seed=6)
    extractor = ClapFeatureExtractor(**{**LAION_CLAP_FEATURES, "truncation": "fusion"})
    feats = extractor(x, sampling_rate=SR, return_tensors="pt")["input_features"]  # [1, 4, 1001, 64]
    with torch.no_grad():
        hidden = enc.backbone.audio_model(input_features=feats, is_longer=torch.zeros(1, 1, dtype=torch.bool))
        ours = enc(torch.from_numpy(x)[None]).frames
    torch.testing.assert_close(ours, hidden.last_hidden_state.mean(2).transpose(1, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seconds, real_frames", [(3.0, 39), (10.0, 128)])
def test_output_shapes_and_masks(audio_encoder, seconds, real_frames):
    n = int(seconds * SR)
    wave = torch.from_numpy(np.stack([noise(seconds, 1), noise(seconds, 2)]))
    with torch.no_grad():
        out = audio_encoder(wave)
    assert out.frames.shape == (2, audio_encoder.frames_per_clip, audio_encoder.dim) == (2, 128, 32)
    assert out.mask.dtype == torch.bool and out.mask.shape == (2, 128)
    # ceil(n / 480000 * 128) frames cover real audio; the rest cover padding only
    assert audio_encoder.num_frames(n) == real_frames == -(-n * 128 // 480_000)
    assert out.mask.sum(1).tolist() == [real_frames, real_frames]
    assert out.mask[:, :real_frames].all()
    assert torch.isfinite(out.frames).all()


def test_frames_are_time_ordered(audio_encoder):
    """Changing the first second changes only early frames; the last second only late ones."""
    wave = torch.from_numpy(noise(10.0, seed=7))[None]
    first, last = wave.clone(), wave.clone()
    first[:, :SR] = torch.from_numpy(noise(1.0, seed=8, scale=0.3))
    last[:, -SR:] = torch.from_numpy(noise(1.0, seed=9, scale=0.3))
    with torch.no_grad():
        base = audio_encoder(wave).frames
        d_first = (audio_encoder(first).frames - base).abs().amax(-1)[0]
        d_last = (audio_encoder(last).frames - base).abs().amax(-1)[0]
    # 12.8 frames per second; Swin windows spread a change over at most ~2 s of frames
    assert d_first[:12].min() > 1e-2 and d_first[32:].max() < 1e-6
    assert d_last[-12:].min() > 1e-2 and d_last[:-32].max() < 1e-6


def test_clip_frames_do_not_depend_on_batch_or_padding(audio_encoder):
    short, long = noise(3.0, 11), noise(10.0, 12)
    batch = torch.zeros(2, 10 * SR)
    batch[0, : 3 * SR] = torch.from_numpy(short)
    batch[1] = torch.from_numpy(long)
    with torch.no_grad():
        alone = audio_encoder(torch.from_numpy(short)[None])
        together = audio_encoder(batch, torch.tensor([3 * SR, 10 * SR]))
    torch.testing.assert_close(together.frames[0], alone.frames[0], atol=1e-5, rtol=0)
    assert torch.equal(together.mask[0], alone.mask[0])


def test_gradient_reaches_waveform(audio_encoder):
    wave = torch.from_numpy(noise(3.0, 13))[None].repeat(1, 2).requires_grad_(True)  # 6 s buffer
    lengths = torch.tensor([3 * SR])
    out = audio_encoder(wave, lengths)
    (out.frames * out.mask[..., None]).pow(2).sum().backward()
    grad = wave.grad[0]
    assert torch.isfinite(grad).all()
    assert (grad[: 3 * SR] != 0).float().mean() > 0.99  # every real sample gets a gradient
    assert torch.count_nonzero(grad[3 * SR :]) == 0  # samples past the length are never read


def test_audio_encoder_is_frozen(audio_encoder):
    assert all(not p.requires_grad for p in audio_encoder.parameters())
    audio_encoder.train()
    assert not audio_encoder.backbone.training
    audio_encoder.eval()


def test_audio_encoder_bad_input(audio_encoder):
    with pytest.raises(ValueError, match="at most 480000"):
        audio_encoder(torch.zeros(1, 10 * SR + 1))
    with pytest.raises(ValueError, match=r"shape \[B, T\]"):
        audio_encoder(torch.zeros(SR))
    with pytest.raises(TypeError, match="floating"):
        audio_encoder(torch.zeros(1, SR, dtype=torch.int16))
    with pytest.raises(ValueError, match="lengths must lie in"):
        audio_encoder(torch.zeros(1, SR), torch.tensor([SR + 1]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        audio_encoder(torch.zeros(2, SR), torch.tensor([SR]))
    with pytest.raises(ValueError, match="sample_rate must be 48000"):
        ClapAudioEncoder(audio_config(sample_rate=24_000))
    with pytest.raises(ValueError, match="window_seconds must be at most 10"):
        ClapAudioEncoder(audio_config(window_seconds=30.0, hop_seconds=15.0))
    with pytest.raises(ValueError, match="layer must be -1"):
        ClapAudioEncoder(audio_config(layer=2))


# ---- text encoder -------------------------------------------------------------------------------
def test_text_padding_is_masked(text_encoder):
    short = "a calm piano"
    longer = "an energetic rock song with distorted guitars, pounding drums and a shouted chorus"
    with torch.no_grad():
        alone = text_encoder.encode([short])
        both = text_encoder.encode([short, longer])
    n = alone.tokens.shape[1]
    assert both.tokens.shape[1] > n and both.tokens.shape[2] == text_encoder.dim == 32
    assert both.mask[0].sum() == n and not both.mask[0, n:].any() and both.mask[1].all()
    torch.testing.assert_close(both.tokens[0, :n], alone.tokens[0], atol=1e-5, rtol=0)


def test_text_tokens_equal_clap_text_tower(saved_clap):
    model, path = saved_clap
    enc = ClapTextEncoder(TextEncoderConfig(kind="clap", name_or_path=path))
    batch = enc.tokenize(["a sad violin", "upbeat electronic dance music"])
    with torch.no_grad():
        expected = model.text_model(**batch).last_hidden_state
        ours = enc(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(ours.tokens, expected, atol=0, rtol=0)
    assert enc.max_tokens == 128 and all(not p.requires_grad for p in enc.parameters())


def test_text_encoder_truncates_and_checks_input(text_encoder):
    batch = text_encoder.tokenize(["x" * 500])
    assert batch["input_ids"].shape == (1, 128)
    with pytest.raises(TypeError, match="list of strings"):
        text_encoder.tokenize("not a list")
    small_vocab = {
        **TINY_CLAP_BACKBONE,
        "text_config": {**TINY_CLAP_BACKBONE["text_config"], "vocab_size": 100},
    }
    with pytest.raises(ValueError, match="vocab_size must be >= 261"):
        ClapTextEncoder(TextEncoderConfig(kind="clap", name_or_path=None, backbone=small_vocab))


# ---- building -----------------------------------------------------------------------------------
def test_same_seed_builds_identical_weights():
    cfg = DeRAMOSConfig.tiny("clap")
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        audio = build_audio_encoder(cfg.audio_encoder)
        text = build_text_encoder(cfg.text_encoder)
        states.append({**audio.state_dict(), **{"t." + k: v for k, v in text.state_dict().items()}})
    assert states[0].keys() == states[1].keys() and len(states[0]) > 0
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])
    for enc in (audio, text):
        assert all(not p.requires_grad for p in enc.parameters())


def test_tiny_backbone_is_json_and_builds_a_clap_model():
    assert json.loads(json.dumps(TINY_CLAP_BACKBONE)) == TINY_CLAP_BACKBONE
    cfg = clap_config(json.loads(json.dumps(TINY_CLAP_BACKBONE)))
    model = ClapModel(cfg)
    assert model.audio_model.audio_encoder.num_features == cfg.audio_config.hidden_size == 32
    assert cfg.text_config.vocab_size == 261 and cfg.projection_dim == 16
    with pytest.raises(ValueError, match="not a valid ClapConfig"):
        clap_config({"text_config": 5})


# ---- with the DeRA-MOS model ------------------------------------------------------------------
def test_deramos_with_clap_scores_in_range():
    torch.manual_seed(0)
    model = dr.DeRAMOS(DeRAMOSConfig.tiny("clap")).eval()
    clip = torch.from_numpy(noise(3.0, 21))[None]
    with torch.no_grad():
        out = model(clip, ["a calm piano piece"])
    for score in (out.mi, out.ta):
        assert score.shape == (1,)
        assert 1.0 <= float(score) <= 5.0
