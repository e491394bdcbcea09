"""The DeRA-MOS model: ranges, batch independence, windowing, MuQ equivalence, parameter count."""

from __future__ import annotations

import pytest
import torch
from conftest import tone

import deramos_reward as dr
from deramos_reward.heads import DeRAMOSHeads

SR = 24_000


def test_scores_are_in_range_with_expected_shapes(tiny_model):
    audio = torch.stack([torch.tensor(tone(2.0, SR, f)) for f in (220, 440, 880)])
    out = tiny_model(audio, ["a calm piano", "fast drums", "a calm piano"])
    assert out.mi.shape == out.ta.shape == (3,)
    assert out.mi_logits.shape == out.ta_logits.shape == (3, 20)
    d_text = tiny_model.text_encoder.dim
    assert out.audio_embedding.shape == out.text_embedding.shape == (3, d_text)
    for s in (out.mi, out.ta):
        assert ((s >= 1.0) & (s <= 5.0)).all()
    centres = torch.linspace(1, 5, 20)
    torch.testing.assert_close(out.mi, torch.softmax(out.mi_logits, -1) @ centres)


def test_score_of_a_clip_does_not_depend_on_its_batch(tiny_model):
    target = torch.tensor(tone(3.0, SR, 330, seed=1))
    others = [torch.tensor(tone(s, SR, 500, seed=2)) for s in (1.3, 5.0, 3.0)]
    padded = torch.zeros(2, 5 * SR)
    padded[0, : target.shape[0]] = target
    with torch.no_grad():
        alone = tiny_model([target], ["slow strings"])
        mixed = tiny_model(
            [others[0], target, others[1], others[2]],
            ["loud rock with a long prompt " * 5, "slow strings", "x", "y"],
        )
        via_lengths = tiny_model(padded, ["slow strings", "x"], audio_lengths=[target.shape[0], 5 * SR])
    assert abs(float(alone.mi[0] - mixed.mi[1])) < 1e-5  # issue asks 1e-3; grouping makes it exact
    assert abs(float(alone.ta[0] - mixed.ta[1])) < 1e-5
    # a padded batch with audio_lengths: each clip is trimmed to its own length
    assert abs(float(alone.mi[0] - via_lengths.mi[0])) < 1e-5


def test_long_clips_are_windowed_and_length_weighted():
    torch.manual_seed(0)
    cfg = dr.DeRAMOSConfig.tiny()
    cfg.audio_encoder.window_seconds, cfg.audio_encoder.hop_seconds = 2.0, 1.5
    model = dr.DeRAMOS(cfg).eval()
    clip = torch.tensor(tone(4.2, SR, 300))
    out = model([clip], ["organ"])
    # independent: score each window as its own clip, weight by its length
    spans = [(0, 2 * SR), (int(1.5 * SR), int(3.5 * SR)), (3 * SR, clip.shape[0])]
    parts = [model([clip[a:b]], ["organ"]) for a, b in spans]
    weights = torch.tensor([b - a for a, b in spans], dtype=torch.float32)
    weights = weights / weights.sum()
    expected_mi = sum(w * p.mi[0] for w, p in zip(weights, parts))
    expected_ta = sum(w * p.ta[0] for w, p in zip(weights, parts))
    assert float(out.mi[0]) == pytest.approx(float(expected_mi), abs=1e-5)
    assert float(out.ta[0]) == pytest.approx(float(expected_ta), abs=1e-5)


def test_short_clips_are_not_run_as_a_full_window(tiny_model):
    seen = []
    hook = tiny_model.audio_encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-1]))
    try:
        tiny_model([torch.tensor(tone(2.0, SR)), torch.tensor(tone(0.1, SR))], ["a", "b"])
    finally:
        hook.remove()
    assert sorted(seen) == [tiny_model.audio_encoder.min_samples, 2 * SR]
    assert max(seen) < tiny_model.window_samples


def test_muq_wrapper_matches_the_muq_package(tiny_model):
    """Our differentiable front-end + MuQ's conv/conformer equals MuQ.forward itself."""
    encoder = tiny_model.audio_encoder
    wave = torch.tensor(tone(2.0, SR, 440)).unsqueeze(0)
    ours = encoder(wave).frames
    reference = encoder.backbone(wave, output_hidden_states=True).last_hidden_state
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    assert ours.shape[1] == encoder.num_frames(wave.shape[1])


def test_gradient_reaches_the_waveform_and_backbones_stay_frozen(tiny_model):
    wave = torch.tensor(tone(1.5, SR)).unsqueeze(0).requires_grad_(True)
    out = tiny_model(wave, ["piano"])
    (out.mi + out.ta).sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all() and wave.grad.abs().sum() > 0
    for name, p in tiny_model.named_parameters():
        if name.startswith(("audio_encoder.", "text_encoder.")):
            assert not p.requires_grad and p.grad is None, name
    tiny_model.heads.zero_grad(set_to_none=True)


def test_train_mode_keeps_backbones_in_eval(tiny_model):
    tiny_model.train()
    try:
        assert not tiny_model.audio_encoder.backbone.training
        assert not tiny_model.text_encoder.backbone.training
        assert tiny_model.heads.training
    finally:
        tiny_model.eval()


def _linear(i, o):
    return i * o + o


def _pool(d, formula="linear"):
    """Attentive pooling: the reference's single Linear(d, 1), plus Linear(d, d) for the tanh formula."""
    return _linear(d, 1) + (_linear(d, d) if formula == "tanh" else 0)


def _paper_head_count(formula="linear", alignment_pool=True):
    da, dt, ff = 1024, 768, 2048
    transformer = 4 * da * da + 4 * da + _linear(da, ff) + _linear(ff, da) + 4 * da
    mi = transformer + _pool(da, formula) + _linear(1024, 512) + _linear(512, 256) + _linear(256, 20)
    ta = (
        _linear(da, dt)
        + _linear(dt, dt)
        + 4 * dt * dt
        + 4 * dt  # cross-attention
        + 2 * dt  # LayerNorm
        + _pool(dt, formula)
        + _linear(768, 384)
        + _linear(384, 192)
        + _linear(192, 20)
        + (_pool(dt, formula) if alignment_pool else 0)  # alignment-space audio pooling (DeRA-MOS)
    )
    return mi + ta


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, 13_178_475),  # the authors' DeRA-MOS heads
        ({"ta_keys": "mi", "alignment_pool": False}, 13_177_706),  # ASTAR-NTU's muq_roberta_transformer_dist
        ({"attentive_pooling": "tanh"}, 15_409_259),  # this package before it followed the reference
    ],
)
def test_head_parameter_count_at_paper_size(changes, expected):
    """Independent count of the heads in docs/model.md at MuQ-large (1024) / roberta-base (768) dims,
    against the reference's own counts."""
    cfg = dr.DeRAMOSConfig(**changes)
    heads = DeRAMOSHeads(1024, 768, cfg)
    formula = changes.get("attentive_pooling", "linear")
    count = _paper_head_count(formula, changes.get("alignment_pool", True))
    assert sum(p.numel() for p in heads.parameters()) == count == expected


def test_model_rejects_bad_direct_input(tiny_model):
    with pytest.raises(ValueError, match="got 2 audio clips but 1 texts"):
        tiny_model(torch.zeros(2, SR), ["only one"])
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        tiny_model(torch.zeros(2, SR), ["fine", "  "])
    with pytest.raises(TypeError, match="floating"):
        tiny_model(torch.zeros(2, SR, dtype=torch.int16), ["a", "b"])
    with pytest.raises(ValueError, match=r"audio\[0\] contains NaN"):
        tiny_model(torch.full((1, SR), float("nan")), ["a"])
    with pytest.raises(ValueError, match=r"audio_lengths\[0\]=0"):
        tiny_model(torch.zeros(1, SR), ["a"], audio_lengths=[0])


@pytest.mark.parametrize("residual", [False, True])
def test_ta_branch_needs_the_residual_to_tell_prompts_apart_on_steady_audio(residual):
    """Cross-attention alone mixes audio frames: on frames that are all alike, every prompt gets the
    same TA. With ``ta_residual`` the prompt's tokens reach the TA head."""
    cfg = dr.DeRAMOSConfig.tiny()
    cfg.ta_residual, cfg.ta_dim, cfg.dropout = residual, 16, 0.0
    torch.manual_seed(0)
    heads = DeRAMOSHeads(8, 32, cfg).eval()
    from deramos_reward.encoders.base import AudioFrames, TextTokens

    frames = AudioFrames(torch.randn(1, 1, 8).expand(2, 5, 8), torch.ones(2, 5, dtype=torch.bool))
    tokens = TextTokens(torch.randn(2, 4, 32), torch.ones(2, 4, dtype=torch.bool))
    ta = heads(frames, tokens).ta
    assert (abs(float(ta[0] - ta[1])) > 1e-4) == residual
