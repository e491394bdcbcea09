"""The judge's uncertainty: standard deviations of the predicted 20-bin distributions (one window and
windowed clips), in RewardOutput, and MusicReward's lower-confidence-bound reward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import deramos_reward as dr

PROMPTS = ["a calm piano piece", "fast drums and bass", "ambient synth pad"]


@pytest.fixture(scope="module")
def judge():
    torch.manual_seed(3)
    cfg = dr.DeRAMOSConfig.tiny()
    cfg.audio_encoder.window_seconds = 1.0  # so a 2.3 s clip is scored in overlapping windows
    cfg.audio_encoder.hop_seconds = 0.5
    return dr.DeRAMOS(cfg).eval()


def _noise(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * 24000), generator=g)


def _numpy_std(logits: torch.Tensor, low: float = 1.0, high: float = 5.0) -> np.ndarray:
    """Standard deviation of the bin centres under softmax(logits), in float64 numpy."""
    x = logits.detach().double().numpy()
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    centres = np.linspace(low, high, x.shape[-1])
    mean = (p * centres).sum(-1)
    return np.sqrt((p * centres**2).sum(-1) - mean**2)


def test_output_std_is_the_spread_of_the_bin_distribution(judge):
    with torch.no_grad():
        out = judge(_noise(3, 0.8), PROMPTS)
    assert out.mi_std.shape == out.ta_std.shape == (3,)
    np.testing.assert_allclose(out.mi_std.numpy(), _numpy_std(out.mi_logits), rtol=1e-5)
    np.testing.assert_allclose(out.ta_std.numpy(), _numpy_std(out.ta_logits), rtol=1e-5)
    # a distribution over [1, 5] has a spread in (0, 2]
    assert bool(((out.mi_std > 0) & (out.mi_std <= 2)).all())


def test_windowed_clip_std_is_the_spread_of_the_combined_distribution(judge):
    """A 2.3 s clip is scored in 1 s windows; its combined logits are the log of the length-weighted mixture
    of the window distributions, and its std must be that mixture's spread."""
    audio = _noise(2, 2.3, seed=1)
    with torch.no_grad():
        out = judge(audio, PROMPTS[:2])
        single = judge(audio[:, :24000], PROMPTS[:2])
    np.testing.assert_allclose(out.mi_std.numpy(), _numpy_std(out.mi_logits), rtol=1e-5)
    np.testing.assert_allclose(out.ta_std.numpy(), _numpy_std(out.ta_logits), rtol=1e-5)
    assert not torch.allclose(out.mi_std, single.mi_std)  # several windows really were combined


def test_reward_output_carries_std_and_the_penalty_gives_a_lower_bound(judge):
    audio = _noise(3, 0.8, seed=2)
    plain = dr.MusicReward(judge, mi_weight=0.7, ta_weight=0.3)
    lam = 1.5
    cautious = dr.MusicReward(judge, mi_weight=0.7, ta_weight=0.3, uncertainty_penalty=lam)
    with torch.no_grad():
        base = plain.evaluate(audio, 24000, PROMPTS)
        low = cautious.evaluate(audio, 24000, PROMPTS)
        direct = judge(audio, PROMPTS)
    torch.testing.assert_close(base.mi_std, direct.mi_std)
    torch.testing.assert_close(base.ta_std, direct.ta_std)
    torch.testing.assert_close(base.audio_embedding, direct.audio_embedding)
    torch.testing.assert_close(low.mi, base.mi)  # the parts are unchanged; only the reward is penalised
    expected = 0.7 * (base.mi - lam * base.mi_std) + 0.3 * (base.ta - lam * base.ta_std)
    torch.testing.assert_close(low.raw, expected)
    torch.testing.assert_close(low.reward, low.raw)
    assert bool((low.reward < base.reward).all())


def test_penalised_reward_stays_differentiable(judge):
    audio = _noise(2, 0.5, seed=3).requires_grad_(True)
    reward = dr.MusicReward(judge, uncertainty_penalty=1.0)
    reward(audio, 24000, PROMPTS[:2]).sum().backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all() and audio.grad.abs().sum() > 0


def test_a_one_hot_distribution_has_zero_spread_and_a_finite_gradient():
    from deramos_reward.layers import score_std

    logits = torch.full((1, 20), -1e4)
    logits[0, 7] = 0.0
    logits.requires_grad_(True)
    std = score_std(logits, torch.linspace(1, 5, 20))
    assert float(std) == pytest.approx(0.0, abs=1e-15)
    std.sum().backward()
    assert torch.isfinite(logits.grad).all()
    uniform = score_std(torch.zeros(1, 20), torch.linspace(1, 5, 20))
    assert float(uniform) == pytest.approx(math.sqrt(np.var(np.linspace(1, 5, 20))), rel=1e-6)


@pytest.mark.parametrize("lam", [-0.5, float("nan"), "1"])
def test_bad_penalty_is_refused(judge, lam):
    with pytest.raises((ValueError, TypeError), match="uncertainty_penalty"):
        dr.MusicReward(judge, uncertainty_penalty=lam)
