"""The online RL objective against hand computations: GRPO and RLOO advantages, per-axis reward shaping,
the clipped policy loss (clipping active, every loss type) with its gradient, the k3 KL estimator, the
diversity measures and guard, and MusicRLConfig (trl names, from_trl, JSON, validation)."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch

from deramos_reward.integrations.rl import (
    TRL_SHARED_FIELDS,
    DiversityCollapseWarning,
    DiversityGuard,
    MusicRLConfig,
    clipped_policy_loss,
    code_entropy,
    group_advantages,
    group_embedding_distance,
    k3_kl,
    policy_tokens,
    sample_embedding_distance,
    shaped_rewards,
    standardize_within_groups,
    token_entropy,
    token_kl,
)

REWARDS = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0], dtype=torch.float64)


def test_grpo_advantages_by_hand():
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)  # unbiased, as trl
    expected = [(r - 3) / (std + 1e-4) for r in (1, 2, 3, 6)] + [0.0] * 4  # a constant group: 0
    torch.testing.assert_close(group_advantages(REWARDS, 4), torch.tensor(expected, dtype=torch.float64))
    none = group_advantages(REWARDS, 4, scale_rewards="none")
    torch.testing.assert_close(none, torch.tensor([-2.0, -1, 0, 3, 0, 0, 0, 0], dtype=torch.float64))
    batch_std = float(torch.tensor([1.0, 2, 3, 6, 5, 5, 5, 5]).std())
    batch = group_advantages(REWARDS, 4, scale_rewards="batch")
    torch.testing.assert_close(batch, none / (batch_std + 1e-4))


def test_rloo_advantages_by_hand():
    # reward minus the mean of the other three: 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3
    expected = [1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2] + [0.0] * 4
    got = group_advantages(REWARDS, 4, advantage="rloo")
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="advantage"):
        group_advantages(REWARDS, 4, advantage="ppo")
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(REWARDS[:7], 4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(REWARDS, 1)


def test_per_axis_normalisation_keeps_one_axis_from_dominating():
    mi = torch.tensor([4.0, 4.2, 3.8, 4.0])  # small spread, best sample 1
    ta = torch.tensor([1.0, 2.0, 5.0, 4.0])  # large spread, best sample 2
    weights = {"mi": 1.0, "ta": 1.0}
    raw = shaped_rewards({"mi": mi, "ta": ta}, weights, 4, normalize_per_axis=False)
    torch.testing.assert_close(raw, mi + ta)
    z = shaped_rewards({"mi": mi, "ta": ta}, weights, 4)

    def hand_z(x):
        m = sum(x) / 4
        s = math.sqrt(sum((v - m) ** 2 for v in x) / 3)
        return [(v - m) / (s + 1e-4) for v in x]

    expected = [a + b for a, b in zip(hand_z(mi.tolist()), hand_z(ta.tolist()))]
    torch.testing.assert_close(z, torch.tensor(expected))
    # both axes now carry the same spread: MI moves the total as much as TA
    assert float(standardize_within_groups(mi, 4).std()) == pytest.approx(
        float(standardize_within_groups(ta, 4).std()), rel=1e-3
    )
    with pytest.raises(ValueError, match="weights"):
        shaped_rewards({"mi": mi, "bonus": ta}, {"mi": 1.0}, 4)


def test_clipped_loss_by_hand_with_clipping_active():
    eps, beta = 0.2, 0.1
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.2, -3.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.4, -2.0, -0.1], [-1.0, -0.3, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.2, -1.8, -0.6], [-1.5, -0.5, -2.5]], dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])

    tokens, grads = {}, {}
    for b in range(2):
        for t in range(3):
            r = math.exp(logps[b, t].item() - old[b, t].item())
            a = adv[b].item()
            c = min(max(r, 1 - eps), 1 + eps)
            surrogate = min(r * a, c * a)
            d = ref[b, t].item() - logps[b, t].item()
            kl = math.exp(d) - d - 1
            tokens[b, t] = (-surrogate + beta * kl, kl, r, a)
            # d/dlogp: -r*a where the unclipped term is the min, else 0; KL: beta * (1 - exp(d))
            unclipped = r * a <= c * a
            grads[b, t] = (-r * a if unclipped else 0.0) + beta * (1 - math.exp(d))
    # token (0,0): r = e^0.4 = 1.49 > 1.2 with A > 0 -> clipped high; token (1,0): r = e^-0.5 = 0.61 < 0.8
    # with A < 0 -> clipped low; token (0,2): r = e^-0.4 = 0.67 < 0.8 with A > 0 -> not clipped
    valid = [(b, t) for b in range(2) for t in range(3) if mask[b, t]]
    count = len(valid)
    out = clipped_policy_loss(logps, old, adv, mask, epsilon=eps, beta=beta, ref_logps=ref, loss_type="dapo")
    assert float(out.loss) == pytest.approx(sum(tokens[k][0] for k in valid) / count, rel=1e-12)
    assert float(out.kl) == pytest.approx(sum(tokens[k][1] for k in valid) / count, rel=1e-12)
    assert float(out.clip_ratio_high) == pytest.approx(1 / count)
    assert float(out.clip_ratio_low) == pytest.approx(1 / count)
    assert float(out.clip_ratio) == pytest.approx(2 / count)
    assert float(out.token_loss[1, 2]) == 0.0
    out.loss.backward()
    expected_grad = [[grads[b, t] / count if mask[b, t] else 0.0 for t in range(3)] for b in range(2)]
    torch.testing.assert_close(logps.grad, torch.tensor(expected_grad, dtype=torch.float64))
    assert logps.grad[0, 0] == pytest.approx(beta * (1 - math.exp(ref[0, 0].item() + 1.0)) / count)  # only KL

    # the other loss types average the same token losses differently
    per_seq = [sum(tokens[b, t][0] for t in range(3) if mask[b, t]) / int(mask[b].sum()) for b in range(2)]
    total = sum(tokens[k][0] for k in valid)
    for loss_type, expected in (
        ("grpo", sum(per_seq) / 2),
        ("bnpo", total / count),
        ("dr_grpo", total / (2 * 3)),
    ):
        got = clipped_policy_loss(logps, old, adv, mask, beta=beta, ref_logps=ref, loss_type=loss_type)
        assert float(got.loss) == pytest.approx(expected, rel=1e-12), loss_type
    dapo = clipped_policy_loss(logps, old, adv, mask, beta=beta, ref_logps=ref, num_items=20)
    assert float(dapo.loss) == pytest.approx(total / 20, rel=1e-12)
    # an asymmetric clip range: with epsilon_high = 0.6 token (0,0) (ratio 1.49) is no longer clipped
    wide = clipped_policy_loss(logps, old, adv, mask, epsilon=eps, epsilon_high=0.6)
    assert float(wide.clip_ratio_high) == 0.0


def test_first_iteration_is_the_plain_policy_gradient():
    """With old == current log-probs (the first update on a batch) nothing is clipped and the gradient
    is -A / count per token: the REINFORCE gradient with the group baseline."""
    logps = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    mask = torch.ones(3, 4, 5, dtype=torch.bool)
    out = clipped_policy_loss(logps, logps.detach(), adv, mask)
    out.loss.backward()
    assert float(out.clip_ratio) == 0.0
    torch.testing.assert_close(logps.grad, (-adv / 60)[:, None, None].expand(3, 4, 5))
    with pytest.raises(ValueError, match="ref_logps"):
        clipped_policy_loss(logps, logps.detach(), adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        clipped_policy_loss(logps, logps.detach(), adv, mask, loss_type="sum")


def test_k3_is_an_unbiased_kl_estimate():
    """k3 is >= 0, 0 when the policies agree, and its mean over samples from the policy is KL(p || q)."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    k3 = k3_kl(p.log()[samples], q.log()[samples])
    exact = float((p * (p / q).log()).sum())
    assert float(k3.mean()) == pytest.approx(exact, rel=0.02)
    assert float(k3.min()) >= 0
    assert float(k3_kl(p.log(), p.log()).abs().max()) == 0.0


def test_the_policy_distribution_and_both_kl_estimators():
    """policy_tokens: one log-softmax of logits / T (nan logits at masked positions ignored, as AudioCraft
    has them); the entropy, the exact KL and k3 read off it by hand; the loss takes either KL."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(2, 2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    codes = torch.randint(0, 5, (2, 2, 3), generator=g)
    mask = torch.ones(2, 2, 3, dtype=torch.bool)
    mask[1, 1, 2] = False
    nan_masked = torch.where(mask[..., None], logits, torch.tensor(float("nan"), dtype=torch.float64))
    pol = policy_tokens(nan_masked, codes, mask, temperature=1.5)
    refs = policy_tokens(ref, codes, mask, temperature=1.5)
    logp = torch.log_softmax(logits / 1.5, -1)
    logq = torch.log_softmax(ref / 1.5, -1)
    want = logp.gather(-1, codes[..., None]).squeeze(-1) * mask
    torch.testing.assert_close(pol.logps, want)
    assert torch.isfinite(pol.log_probs).all() and float(pol.logps[1, 1, 2]) == 0.0
    p = logp.exp()
    torch.testing.assert_close(token_entropy(pol.log_probs)[mask], (-(p * logp).sum(-1))[mask])
    exact = token_kl("exact", pol.logps, refs.logps, pol.log_probs, refs.log_probs)
    torch.testing.assert_close(exact[mask], (p * (logp - logq)).sum(-1)[mask])
    k3 = token_kl("k3", pol.logps, refs.logps)
    torch.testing.assert_close(k3, k3_kl(pol.logps, refs.logps))
    exact[mask].sum().backward()
    assert logits.grad.abs().sum() > 0 and ref.grad is None  # the reference is a constant
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    lp = pol.logps.detach().requires_grad_(True)
    via_kl = clipped_policy_loss(lp, lp.detach(), adv, mask, beta=0.3, kl=k3_kl(lp, refs.logps.detach()))
    via_ref = clipped_policy_loss(lp, lp.detach(), adv, mask, beta=0.3, ref_logps=refs.logps.detach())
    torch.testing.assert_close(via_kl.loss, via_ref.loss)
    torch.testing.assert_close(via_kl.kl, via_ref.kl)
    with pytest.raises(ValueError, match="kl_estimator"):
        token_kl("k2", pol.logps, refs.logps)
    with pytest.raises(ValueError, match="exact KL needs"):
        token_kl("exact", pol.logps, refs.logps)


def test_diversity_measures_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [4.0, 0.0], [1.0, 0.0]])
    # group 1 (size 3): distances 1, 1 - 1/sqrt2, 1 - 1/sqrt2; group 2: all the same direction
    d = 1 - 1 / math.sqrt(2)
    torch.testing.assert_close(group_embedding_distance(e, 3), torch.tensor([(1 + 2 * d) / 3, 0.0]))
    torch.testing.assert_close(
        sample_embedding_distance(e, 3), torch.tensor([(1 + d) / 2, (1 + d) / 2, d, 0.0, 0.0, 0.0])
    )
    codes = torch.tensor(
        [
            [[0, 0], [1, 2]],
            [[0, 0], [3, 4]],  # group 1: codebook 0 all zeros (0 bits), codebook 1 four codes (2 bits)
            [[5, 6], [1, 1]],
            [[5, 6], [2, 2]],  # group 2: codebook 0 two codes twice (1 bit), codebook 1 two (1 bit)
        ]
    )
    torch.testing.assert_close(code_entropy(codes, 2, card=8), torch.tensor([1.0, 1.0]))


def test_diversity_guard_warns_once_per_drop():
    guard = DiversityGuard(0.5, warmup=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert guard.check({"embedding_distance": 0.3, "code_entropy": 6.0}, 1) == []
        assert guard.check({"embedding_distance": 0.1, "code_entropy": 6.0}, 2) == []  # warm-up: no warning
        assert guard.reference == {"embedding_distance": 0.2, "code_entropy": 6.0}
        assert guard.check({"embedding_distance": 0.15, "code_entropy": 6.0}, 3) == []
    with pytest.warns(DiversityCollapseWarning, match="embedding_distance.*0.09"):
        assert guard.check({"embedding_distance": 0.09, "code_entropy": 6.0}, 4) == ["embedding_distance"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # still low: no second warning
        assert guard.check({"embedding_distance": 0.05, "code_entropy": 6.0}, 5) == ["embedding_distance"]
    restored = DiversityGuard(0.5, warmup=2)
    restored.load_state(json.loads(json.dumps(guard.state())))
    assert restored.reference == guard.reference and restored.low == guard.low
    with pytest.warns(DiversityCollapseWarning):  # recovered, then dropped again: warned again
        restored.check({"embedding_distance": 0.2, "code_entropy": 6.0}, 6)
        restored.check({"embedding_distance": 0.01, "code_entropy": 6.0}, 7)
    with pytest.raises(ValueError, match="threshold"):
        DiversityGuard(1.5)


# ------------------------------------------------------------------------------------------- config


def test_config_uses_trl_grpo_names_and_round_trips(tmp_path):
    from trl import GRPOConfig

    trl_fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    ours = {f.name for f in dataclasses.fields(MusicRLConfig)}
    assert set(TRL_SHARED_FIELDS) <= trl_fields and set(TRL_SHARED_FIELDS) <= ours
    trl_config = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        learning_rate=3e-5,
        num_generations=4,
        beta=0.2,
        epsilon=0.1,
        num_iterations=2,
        loss_type="grpo",
        temperature=0.9,
        top_k=50,
        max_steps=7,
        save_steps=3,
        seed=5,
        report_to="none",
    )
    config = MusicRLConfig.from_trl(trl_config, advantage="rloo", lora_r=4)
    assert (config.learning_rate, config.num_generations, config.beta, config.epsilon) == (3e-5, 4, 0.2, 0.1)
    assert (config.num_iterations, config.loss_type, config.temperature, config.top_k) == (2, "grpo", 0.9, 50)
    assert (config.max_steps, config.save_steps, config.seed, config.output_dir) == (7, 3, 5, str(tmp_path))
    assert (config.advantage, config.lora_r, config.report_to) == ("rloo", 4, "none")
    assert MusicRLConfig.from_json(config.to_json()) == config
    assert MusicRLConfig(**json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="max_steps"):
        MusicRLConfig.from_trl(GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none"))
    with pytest.raises(ValueError, match="unknown MusicRLConfig fields"):
        MusicRLConfig.from_json('{"num_generation": 4}')
    # the example
    assert MusicRLConfig(num_generations=4, max_steps=20, output_dir="run").num_generations == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_generations": 1}, ValueError, "num_generations"),
        ({"advantage": "ppo"}, ValueError, "advantage"),
        ({"loss_type": "cispo"}, ValueError, "loss_type"),
        ({"scale_rewards": "max"}, ValueError, "scale_rewards"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"epsilon": 1.5}, ValueError, "epsilon"),
        ({"learning_rate": "1e-4"}, TypeError, "learning_rate"),
        ({"duration": 0}, ValueError, "duration"),
        ({"max_steps": -1}, ValueError, "max_steps"),
        ({"top_k": -1}, ValueError, "top_k"),
        ({"diversity_warning": 1.0}, ValueError, "diversity_warning"),
        ({"guidance_scale": 0.5}, ValueError, "guidance_scale"),
        ({"guidance_scale": True}, TypeError, "guidance_scale"),
        ({"kl_estimator": "k2"}, ValueError, "kl_estimator"),
        ({"generation_kwargs": {"cfg_coef": 1.0}}, ValueError, "config field guidance_scale"),
        ({"mi_weight": 1.0}, TypeError, "mi_weight"),  # the reward's own weights are used
        ({"normalize_per_axis": 1}, TypeError, "normalize_per_axis"),
        ({"bf16": "auto"}, TypeError, "bf16"),
        ({"generation_kwargs": {"temperature": 2.0}}, ValueError, "temperature"),
        ({"generation_kwargs": {"x": object()}}, TypeError, "JSON"),
        ({"report_to": 3}, TypeError, "report_to"),
        ({"eval_steps": 0}, ValueError, "eval_steps"),
    ],
)
def test_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        MusicRLConfig(**kwargs)
