"""dpo_loss against the DPO / cDPO / IPO formulas written out in numpy (trl 1.16 conventions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deramos_reward.integrations.training.dpo.loss import DPO_LOSS_TYPES, dpo_loss


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@pytest.fixture
def logps():
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(-50.0, 5.0, size=6) for _ in range(4))
    return pc, pr, rc, rr


def _tensors(*arrays):
    return [torch.tensor(a, dtype=torch.float64) for a in arrays]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_sigmoid_matches_formula(logps, beta, label_smoothing):
    pc, pr, rc, rr = logps
    losses, chosen, rejected = dpo_loss(*_tensors(pc, pr, rc, rr), beta=beta, label_smoothing=label_smoothing)
    z = beta * ((pc - rc) - (pr - rr))
    expected = -(1 - label_smoothing) * _log_sigmoid(z) - label_smoothing * _log_sigmoid(-z)
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chosen.numpy(), beta * (pc - rc), rtol=1e-12)
    np.testing.assert_allclose(rejected.numpy(), beta * (pr - rr), rtol=1e-12)


def test_sigmoid_at_equal_policy_and_reference_is_log_two(logps):
    pc, pr, _, _ = logps
    losses, chosen, rejected = dpo_loss(*_tensors(pc, pr, pc, pr))
    np.testing.assert_allclose(losses.numpy(), np.log(2.0), rtol=1e-12)
    assert torch.count_nonzero(chosen) == 0 and torch.count_nonzero(rejected) == 0


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_ipo_matches_formula(logps, beta):
    pc, pr, rc, rr = logps
    losses, chosen, _ = dpo_loss(*_tensors(pc, pr, rc, rr), beta=beta, loss_type="ipo")
    expected = ((pc - rc) - (pr - rr) - 1.0 / (2.0 * beta)) ** 2
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(chosen.numpy(), beta * (pc - rc), rtol=1e-12)


def test_ipo_length_normalised_like_trl(logps):
    pc, pr, rc, rr = logps
    n_chosen = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    n_rejected = np.array([60.0, 50.0, 40.0, 30.0, 20.0, 10.0])
    losses, _, _ = dpo_loss(
        *_tensors(pc, pr, rc, rr),
        beta=0.25,
        loss_type="ipo",
        chosen_lengths=torch.tensor(n_chosen),
        rejected_lengths=torch.tensor(n_rejected, dtype=torch.float32),
    )
    expected = ((pc - rc) / n_chosen - (pr - rr) / n_rejected - 1.0 / (2.0 * 0.25)) ** 2
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-12)


def test_gradient_raises_chosen_and_lowers_rejected(logps):
    pc, pr, rc, rr = _tensors(*logps)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    for loss_type in DPO_LOSS_TYPES:
        pc.grad = pr.grad = None
        losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type=loss_type)
        losses.mean().backward()
        delta = (pc - rc) - (pr - rr)
        if loss_type == "sigmoid":
            # d/d pc of -logsigmoid(beta * delta) = -beta * sigmoid(-beta * delta)
            expected = -0.1 * torch.sigmoid(-0.1 * delta.detach()) / len(delta)
        else:
            expected = 2.0 * (delta.detach() - 5.0) / len(delta)
        torch.testing.assert_close(pc.grad, expected)
        torch.testing.assert_close(pr.grad, -expected)
        assert not chosen.requires_grad and not rejected.requires_grad


def test_validation_errors(logps):
    pc, pr, rc, rr = _tensors(*logps)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(pc, pr, rc, rr[:3])
    with pytest.raises(ValueError, match=r"policy_chosen_logps must have shape \[B\]"):
        dpo_loss(pc[None], pr, rc, rr)
    with pytest.raises(TypeError, match="policy_rejected_logps"):
        dpo_loss(pc, pr.numpy(), rc, rr)
    with pytest.raises(TypeError, match="floating-point"):
        dpo_loss(pc, pr, rc.long(), rr)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(pc, pr, rc, rr, loss_type="hinge")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="together"):
        dpo_loss(pc, pr, rc, rr, loss_type="ipo", chosen_lengths=torch.ones(6))
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(
            pc, pr, rc, rr, loss_type="ipo", chosen_lengths=torch.ones(5), rejected_lengths=torch.ones(6)
        )
    with pytest.raises(ValueError, match="positive"):
        dpo_loss(
            pc, pr, rc, rr, loss_type="ipo", chosen_lengths=torch.zeros(6), rejected_lengths=torch.ones(6)
        )
    with pytest.raises(ValueError, match="only used by loss_type='ipo'"):
        dpo_loss(pc, pr, rc, rr, chosen_lengths=torch.ones(6), rejected_lengths=torch.ones(6))
