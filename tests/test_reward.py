"""MusicReward: gradients, batching, prompt cache, normalisation, frozen scorer."""

from __future__ import annotations

import math

import pytest
import torch

import deramos_reward as dr
from deramos_reward.reward import call_reward, rank_within_groups

PROMPTS = ["a calm piano piece", "fast drums and bass", "a calm piano piece", "ambient synth pad"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return dr.DeRAMOS(dr.DeRAMOSConfig.tiny())


@pytest.fixture(scope="module")
def model64():
    torch.manual_seed(2)
    return dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).double()


def waves(batch: int, seconds: float, rate: int, channels: int = 0, seed: int = 0, dtype=torch.float32):
    """Tones with noise: [batch, T] or [batch, channels, T]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    freq = 200.0 + 300.0 * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    x = 0.3 * torch.sin(2 * math.pi * freq * t) + 0.05 * torch.randn(
        batch, t.shape[0], generator=g, dtype=torch.float64
    )
    if channels:
        x = torch.stack([x * (1.0 - 0.3 * c) for c in range(channels)], dim=1)
    return x.to(dtype)


def test_gradient_matches_central_differences_float64(model64):
    """Through resampling (16 -> 24 kHz), stereo downmix, mel, MuQ, RoBERTa tokens and both heads."""
    reward = dr.MusicReward(model64, mi_weight=1.0, ta_weight=0.7)
    prompts = ["a calm piano piece", "fast drums"]
    x = waves(2, 1.0, 16_000, channels=2, dtype=torch.float64).requires_grad_(True)
    out = reward(x, 16_000, prompts)
    assert out.dtype == torch.float64 and out.shape == (2,)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0
    g = torch.Generator().manual_seed(3)
    eps = 1e-4
    for _ in range(3):
        d = torch.randn(x.shape, generator=g, dtype=torch.float64)
        d /= d.norm()
        with torch.no_grad():
            up = reward(x + eps * d, 16_000, prompts).sum()
            down = reward(x - eps * d, 16_000, prompts).sum()
        numeric = float((up - down) / (2 * eps))
        analytic = float((grad * d).sum())
        assert numeric == pytest.approx(analytic, rel=2e-3, abs=1e-9)


def test_gradient_ascent_raises_reward(model):
    reward = dr.MusicReward(model)
    x = waves(1, 1.0, 24_000, seed=5).requires_grad_(True)
    start = float(reward(x, 24_000, ["a calm piano piece"]))
    values = []
    for _ in range(4):
        r = reward(x, 24_000, ["a calm piano piece"])
        (grad,) = torch.autograd.grad(r.sum(), x)
        with torch.no_grad():
            x += 0.5 * grad / grad.norm()  # a step of norm 0.5 (the clip's norm is ~ 35)
        values.append(float(reward(x, 24_000, ["a calm piano piece"])))
    assert values[-1] > start + 1e-4
    assert all(b > a for a, b in zip([start, *values], values))


def test_scorer_parameters_never_receive_gradients(model):
    reward = dr.MusicReward(model)
    reward.train()  # a training loop may call .train() on everything
    assert not model.training and not model.heads.training
    assert all(not p.requires_grad for p in model.parameters())
    x = waves(2, 1.0, 24_000).requires_grad_(True)
    reward(x, 24_000, PROMPTS[:2]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="frozen"):
        reward.requires_grad_(True)


def test_scorer_is_frozen_once_and_stays_untouched_through_optimisation():
    torch.manual_seed(3)
    scorer = dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).train()  # its own copy: frozen in place below
    before = {k: v.clone() for k, v in scorer.state_dict().items()}
    with pytest.raises(ValueError, match="chunk_size"):
        dr.MusicReward(scorer, chunk_size=0)
    assert scorer.training and all(p.requires_grad for p in scorer.heads.parameters())  # refused: untouched
    reward = dr.MusicReward(scorer, chunk_size=1)
    assert not scorer.training and all(not p.requires_grad for p in scorer.parameters())
    x = waves(2, 0.5, 24_000, seed=9).requires_grad_(True)
    opt = torch.optim.SGD([x], lr=1e-3)
    for step in range(3):
        reward.train(step % 2 == 0)  # a loop toggling train/eval on everything it holds
        reward.requires_grad_(False)  # allowed: it is already frozen
        assert not scorer.training and all(not p.requires_grad for p in scorer.parameters())
        opt.zero_grad()
        (-reward(x, 24_000, PROMPTS[:2]).sum()).backward()
        opt.step()
        assert x.grad.abs().sum() > 0 and all(p.grad is None for p in scorer.parameters())
    with pytest.raises(ValueError, match="frozen"):
        reward.requires_grad_(True)
    assert all(not p.requires_grad for p in scorer.parameters())
    after = scorer.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_batched_reward_equals_per_clip(model):
    reward = dr.MusicReward(model, mi_weight=0.5, ta_weight=2.0, chunk_size=3)
    x = waves(4, 1.2, 32_000, channels=2, seed=7)
    with torch.no_grad():
        batched = reward(x, 32_000, PROMPTS)
        single = torch.cat([reward(x[i : i + 1], 32_000, PROMPTS[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
    # independent computation: the model on the clip resampled and downmixed by the front-end
    from deramos_reward.frontend import batch_to_clips

    clips = batch_to_clips(x, 32_000, model.sample_rate).waves
    with torch.no_grad():
        out = model.forward_clips(clips, PROMPTS)
    torch.testing.assert_close(batched, 0.5 * out.mi + 2.0 * out.ta, rtol=0, atol=1e-5)


def test_clips_of_different_lengths_and_long_clips(model):
    """A list of clips of different lengths; a clip longer than the window is scored in windows."""
    reward = dr.MusicReward(model, chunk_size=2)
    a, b = waves(1, 0.7, 24_000, seed=1)[0], waves(1, 1.3, 24_000, seed=2)[0]
    with torch.no_grad():
        both = reward([a, b], 24_000, ["x y", "z"])
        alone = torch.cat([reward(a[None], 24_000, "x y"), reward(b[None], 24_000, "z")])
    torch.testing.assert_close(both, alone, rtol=0, atol=1e-5)


def test_prompt_cache_encodes_each_prompt_once_and_is_exact(model):
    reward = dr.MusicReward(model, chunk_size=2)
    x = waves(4, 1.0, 24_000, seed=11)
    with torch.no_grad():
        first = reward(x, 24_000, PROMPTS)
        assert reward.prompt_cache.encoded_count == 3  # three distinct prompts
        second = reward(x, 24_000, PROMPTS)
        third = reward(x[:2], 24_000, PROMPTS[:2])
    assert reward.prompt_cache.encoded_count == 3
    assert torch.equal(first, second)
    torch.testing.assert_close(third, first[:2], rtol=0, atol=1e-6)
    # without the cache: the model encodes the prompts itself
    with torch.no_grad():
        out = model(x, PROMPTS)
    torch.testing.assert_close(first, 0.5 * out.mi + 0.5 * out.ta, rtol=0, atol=1e-5)  # default weights


def test_single_string_prompt_broadcasts(model):
    reward = dr.MusicReward(model)
    x = waves(3, 1.0, 24_000)
    with torch.no_grad():
        torch.testing.assert_close(reward(x, 24_000, "piano"), reward(x, 24_000, ["piano"] * 3))


def test_zscore_uses_stored_statistics(model):
    x = waves(4, 1.0, 24_000, seed=3)
    raw = dr.MusicReward(model)
    z = dr.MusicReward(model, normalize="zscore", stats={"mean": 6.0, "std": 0.01})
    with torch.no_grad():
        torch.testing.assert_close(z(x, 24_000, PROMPTS), (raw(x, 24_000, PROMPTS) - 6.0) / 0.01)
        stats = z.calibrate(x, 24_000, PROMPTS)
        r = raw(x, 24_000, PROMPTS).double()
        assert stats["mean"] == pytest.approx(float(r.mean()))
        assert stats["std"] == pytest.approx(float(r.std()))
        zs = z(x, 24_000, PROMPTS).double()
    assert float(zs.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(zs.std()) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="statistics"):
        dr.MusicReward(model, normalize="zscore")(x, 24_000, PROMPTS)


def test_rank_normalisation_within_prompt_groups(model):
    reward = dr.MusicReward(model, normalize="rank")
    raw = dr.MusicReward(model)
    x = waves(4, 1.0, 24_000, seed=4).requires_grad_(True)
    ranks = reward(x, 24_000, PROMPTS)
    assert not ranks.requires_grad  # documented: rank is not differentiable
    r = raw(x, 24_000, PROMPTS).detach()
    # prompts 0 and 2 share a group; 1 and 3 are alone
    hi, lo = (0, 2) if r[0] > r[2] else (2, 0)
    assert ranks[hi] == 1.0 and ranks[lo] == 0.0 and ranks[1] == 0.5 and ranks[3] == 0.5
    by_id = reward(x, 24_000, PROMPTS, group_ids=[0, 0, 0, 0])
    expected = torch.argsort(torch.argsort(r)).to(by_id.dtype) / 3
    torch.testing.assert_close(by_id, expected)


def test_rank_within_groups_ties():
    v = torch.tensor([1.0, 3.0, 3.0, 2.0, 5.0])
    out = rank_within_groups(v, ["a", "a", "a", "a", "b"])
    torch.testing.assert_close(out, torch.tensor([0.0, 2.5 / 3, 2.5 / 3, 1 / 3, 0.5]))


def test_autocast_bf16_keeps_float32_scores(model):
    reward = dr.MusicReward(model)
    x = waves(2, 1.0, 24_000, seed=8).requires_grad_(True)
    with torch.no_grad():
        full = reward(x, 24_000, PROMPTS[:2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = reward(x, 24_000, PROMPTS[:2])
    assert low.dtype == torch.float32
    assert not torch.equal(low, low.to(torch.bfloat16).float())  # not rounded to bf16 steps
    torch.testing.assert_close(low.detach(), full, rtol=0, atol=0.05)
    (grad,) = torch.autograd.grad(low.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradient(model):
    x = waves(3, 1.0, 24_000, seed=9)
    grads = []
    for ckpt in (False, True):
        reward = dr.MusicReward(model, chunk_size=2, gradient_checkpointing=ckpt)
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(reward(xi, 24_000, PROMPTS[:3]).sum(), xi)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1])


def test_bad_inputs_are_named(model):
    reward = dr.MusicReward(model)
    x = waves(2, 1.0, 24_000)
    with pytest.raises(ValueError, match="prompts"):
        reward(x, 24_000, ["only one"])
    with pytest.raises(ValueError, match="audio"):
        reward(torch.zeros(2, 2, 2, 10), 24_000, ["a", "b"])
    with pytest.raises(ValueError, match="group_ids"):
        dr.MusicReward(model, normalize="rank")(x, 24_000, ["a", "b"], group_ids=[0])
    with pytest.raises(ValueError, match="normalize"):
        dr.MusicReward(model, normalize="minmax")
    with pytest.raises(ValueError, match="chunk_size"):
        dr.MusicReward(model, chunk_size=0)
    with pytest.raises(TypeError, match="model"):
        dr.MusicReward(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="std"):
        reward.set_stats(1.0, 0.0)


def test_call_reward_is_the_one_way_loops_call_a_reward(model):
    """call_reward: a MusicReward's parts (rank groups honoured) or its [B] reward with gradient; a plain
    callable's [B] or [B, 1] output as [B] float; a RewardOutput-returning callable; bad outputs named."""
    reward = dr.MusicReward(model, mi_weight=1.0, ta_weight=0.0, normalize="rank")
    audio = waves(4, 0.5, 16000).requires_grad_(True)
    parts = call_reward(reward, audio, 16000, PROMPTS, parts=True, group_ids=[0, 0, 1, 1])
    direct = reward.evaluate(audio, 16000, PROMPTS, group_ids=[0, 0, 1, 1])
    torch.testing.assert_close(parts.reward, direct.reward)
    torch.testing.assert_close(parts.raw, direct.mi)  # the reward's own weights: MI alone
    plain = dr.MusicReward(model)
    values = call_reward(plain, audio, 16000, PROMPTS)
    values.sum().backward()
    assert values.shape == (4,) and audio.grad.abs().sum() > 0
    column = call_reward(lambda a, s, p: torch.ones(len(p), 1, dtype=torch.int64), audio, 16000, PROMPTS)
    assert column.dtype == torch.float32 and column.tolist() == [1.0] * 4
    wrapped = call_reward(lambda a, s, p: plain.evaluate(a, s, p), audio, 16000, PROMPTS)
    torch.testing.assert_close(wrapped, values)
    with pytest.raises(ValueError, match="returned 3 values"):
        call_reward(lambda a, s, p: torch.zeros(3), audio, 16000, PROMPTS)
    with pytest.raises(ValueError, match="non-finite"):
        call_reward(lambda a, s, p: torch.full((4,), float("nan")), audio, 16000, PROMPTS)
