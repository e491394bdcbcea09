"""DeRA-MOS losses against independent numpy computations and analytic gradients."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deramos_reward import losses as L


def _np_soft(y: np.ndarray, n_bins=20, sigma=0.25, low=1.0, high=5.0) -> np.ndarray:
    centres = low + (high - low) * np.arange(n_bins) / (n_bins - 1)
    dens = np.exp(-((centres[None, :] - y[:, None]) ** 2) / (2 * sigma**2))
    return dens / dens.sum(axis=1, keepdims=True)


def _np_log_softmax(x: np.ndarray, axis=-1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_soft_labels_match_normalised_gaussian(gen):
    y = torch.tensor([1.0, 2.3, 3.1, 4.8, 5.0], dtype=torch.float64)
    soft = L.gaussian_soft_labels(y)
    assert soft.shape == (5, 20)
    np.testing.assert_allclose(soft.numpy(), _np_soft(y.numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(soft.sum(-1).numpy(), 1.0)
    # the mode is the bin centre nearest the target
    centres = np.linspace(1, 5, 20)
    assert soft.argmax(-1).tolist() == [int(np.abs(centres - v).argmin()) for v in y.tolist()]
    other = L.gaussian_soft_labels(y, n_bins=9, sigma=0.5, low=0.0, high=10.0)
    np.testing.assert_allclose(other.numpy(), _np_soft(y.numpy(), 9, 0.5, 0.0, 10.0), rtol=1e-10)


def test_soft_labels_far_outside_range_stay_finite():
    soft = L.gaussian_soft_labels(torch.tensor([-100.0, 100.0]))
    assert torch.isfinite(soft).all()
    assert soft[0, 0] == pytest.approx(1.0) and soft[1, -1] == pytest.approx(1.0)


def test_distribution_loss_is_batchmean_kl_with_analytic_gradient(gen):
    logits = torch.randn(6, 20, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(6, generator=gen, dtype=torch.float64) * 4 + 1
    loss = L.distribution_loss(logits, y)
    p = _np_soft(y.numpy())
    logq = _np_log_softmax(logits.detach().numpy())
    expected = (p * (np.log(p) - logq)).sum() / 6
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    # d KL / d logits = (softmax(logits) - p) / B
    np.testing.assert_allclose(logits.grad.numpy(), (np.exp(logq) - p) / 6, atol=1e-12)


def test_distribution_loss_zero_at_soft_label():
    y = torch.tensor([1.4, 3.2, 4.6], dtype=torch.float64)
    logits = torch.log(L.gaussian_soft_labels(y, sigma=0.3)) + 7.0  # any shift
    assert L.distribution_loss(logits, y, sigma=0.3).item() == pytest.approx(0.0, abs=1e-12)
    assert L.distribution_loss(logits, y, sigma=0.25).item() > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_balr_value_and_gradient(gen, temperature):
    s = torch.randn(8, generator=gen, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(8, generator=gen, dtype=torch.float64) * 4 + 1).requires_grad_(True)
    loss = L.listwise_ranking_loss(s, y, temperature)
    p = np.exp(_np_log_softmax(y.detach().numpy() / temperature))
    logq = _np_log_softmax(s.detach().numpy() / temperature)
    assert loss.item() == pytest.approx(-(p * logq).sum(), rel=1e-10)
    loss.backward()
    np.testing.assert_allclose(s.grad.numpy(), (np.exp(logq) - p) / temperature, atol=1e-12)
    assert y.grad is None  # the target side carries no gradient


def test_balr_prefers_the_right_order_and_ignores_shift(gen):
    y = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    right = L.listwise_ranking_loss(y.clone(), y)
    wrong = L.listwise_ranking_loss(y.flip(0), y)
    assert right < wrong
    assert L.listwise_ranking_loss(y + 3.0, y).item() == pytest.approx(right.item(), rel=1e-6)


def test_balr_single_item_is_zero_with_gradient():
    s = torch.tensor([3.0], requires_grad=True)
    loss = L.listwise_ranking_loss(s, torch.tensor([4.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert s.grad is not None and s.grad.item() == 0.0


@pytest.mark.parametrize("mapping", ["affine", "raw"])
def test_sama_value_and_gradcheck(gen, mapping):
    a = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 2.2, 3.0, 4.4, 5.0], dtype=torch.float64)
    loss = L.score_anchored_alignment_loss(a, t, y, mapping=mapping)
    an, tn = a.detach().numpy(), t.detach().numpy()
    cos = (an * tn).sum(1) / (np.linalg.norm(an, axis=1) * np.linalg.norm(tn, axis=1))
    mapped = (cos + 1) / 2 if mapping == "affine" else cos
    assert loss.item() == pytest.approx(np.mean((mapped - (y.numpy() - 1) / 4) ** 2), rel=1e-10)
    assert torch.autograd.gradcheck(
        lambda a_, t_: L.score_anchored_alignment_loss(a_, t_, y, mapping=mapping), (a, t)
    )


def test_sama_zero_when_cosine_hits_the_anchor():
    # unit vectors at angle theta: cos = cos(theta); choose theta so (cos + 1) / 2 = (y - 1) / 4
    y = torch.tensor([2.0, 4.0], dtype=torch.float64)
    cos = 2 * (y - 1) / 4 - 1
    theta = torch.arccos(cos)
    a = torch.stack([torch.ones(2), torch.zeros(2)], 1).double()
    t = torch.stack([torch.cos(theta), torch.sin(theta)], 1) * 3.0
    assert L.score_anchored_alignment_loss(a, t, y).item() == pytest.approx(0.0, abs=1e-12)
    # the raw mapping anchors the cosine itself
    assert L.score_anchored_alignment_loss(a, t, y, mapping="raw").item() > 0.01


def test_regression_losses(gen):
    p, y = torch.randn(9, generator=gen), torch.randn(9, generator=gen)
    assert L.regression_loss(p, y).item() == pytest.approx(np.abs(p - y).mean().item(), rel=1e-6)
    assert L.regression_loss(p, y, "mse").item() == pytest.approx(((p - y) ** 2).mean().item(), rel=1e-6)


def test_pairwise_ranking_matches_explicit_loop(gen):
    p = torch.randn(7, generator=gen, dtype=torch.float64)
    y = torch.tensor([1.0, 2.0, 2.0, 3.4, 1.0, 5.0, 4.0], dtype=torch.float64)
    terms = [
        max(0.0, 0.3 - (p[i] - p[j]).item()) for i, j in itertools.permutations(range(7), 2) if y[i] > y[j]
    ]
    assert L.pairwise_ranking_loss(p, y, margin=0.3).item() == pytest.approx(np.mean(terms), rel=1e-10)
    s = torch.randn(4, requires_grad=True)
    tied = L.pairwise_ranking_loss(s, torch.full((4,), 3.0))
    tied.backward()
    assert tied.item() == 0.0 and s.grad.abs().sum() == 0


def _out(gen, b=6, d=5, bins=20):
    mi_logits = torch.randn(b, bins, generator=gen, requires_grad=True)
    ta_logits = torch.randn(b, bins, generator=gen, requires_grad=True)
    centres = torch.linspace(1, 5, bins)
    return SimpleNamespace(
        mi_logits=mi_logits,
        ta_logits=ta_logits,
        mi=(mi_logits.softmax(-1) * centres).sum(-1),
        ta=(ta_logits.softmax(-1) * centres).sum(-1),
        audio_embedding=torch.randn(b, d, generator=gen, requires_grad=True),
        text_embedding=torch.randn(b, d, generator=gen, requires_grad=True),
    )


@pytest.mark.parametrize("preset", sorted(L.ABLATIONS))
def test_deramos_loss_combines_parts_per_preset(gen, preset):
    out = _out(gen)
    mi_t = torch.tensor([1.0, 2.0, 3.0, 3.6, 4.2, 5.0])
    ta_t = torch.tensor([4.0, 1.2, 3.0, 2.6, 4.8, 2.0])
    w = L.LossWeights.preset(preset)
    total, parts = L.deramos_loss(out, mi_t, ta_t, w)
    if w.objective == "distribution":
        expected = L.distribution_loss(out.mi_logits, mi_t) + L.distribution_loss(out.ta_logits, ta_t)
    else:
        expected = L.regression_loss(out.mi, mi_t, w.regression_kind) + L.regression_loss(
            out.ta, ta_t, w.regression_kind
        )
    assert set(parts) == {"mi", "ta", "total"} | ({"balr"} if w.use_balr else set()) | (
        {"sama"} if w.use_sama else set()
    )
    if w.use_balr:
        rank = (
            L.listwise_ranking_loss(out.mi, mi_t)
            if w.ranking == "listwise"
            else L.pairwise_ranking_loss(out.mi, mi_t, w.pairwise_margin)
        )
        expected = expected + w.alpha * rank
        assert parts["balr"].item() == pytest.approx(rank.item(), rel=1e-6)
    if w.use_sama:
        sama = L.score_anchored_alignment_loss(out.audio_embedding, out.text_embedding, ta_t)
        expected = expected + w.beta * sama
        assert parts["sama"].item() == pytest.approx(sama.item(), rel=1e-6)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["total"].item() == pytest.approx(total.item()) and not parts["total"].requires_grad
    total.backward()
    assert (out.audio_embedding.grad is not None) == w.use_sama
    assert out.mi_logits.grad is not None and out.mi_logits.grad.abs().sum() > 0


def test_paper_defaults_and_configurable_weights(gen):
    w = L.LossWeights()
    assert (w.alpha, w.beta, w.temperature, w.sigma, w.sama_mapping) == (0.2, 0.3, 1.0, 0.25, "affine")
    assert w.use_balr and w.use_sama and w.objective == "distribution"
    out = _out(gen)
    mi_t = torch.linspace(1, 5, 6)
    ta_t = torch.linspace(5, 1, 6)
    _, p = L.deramos_loss(out, mi_t, ta_t)
    total2, _ = L.deramos_loss(out, mi_t, ta_t, L.LossWeights(alpha=1.0, beta=2.0))
    assert total2.item() == pytest.approx((p["mi"] + p["ta"] + p["balr"] + 2.0 * p["sama"]).item(), rel=1e-6)


def test_balr_over_gathered_global_batch(gen):
    out = _out(gen)
    mi_t = torch.linspace(1, 5, 6)
    others = torch.tensor([2.0, 3.0, 4.5])
    pred = torch.cat([out.mi, others])
    target = torch.cat([mi_t, torch.tensor([1.0, 3.0, 5.0])])
    _, parts = L.deramos_loss(out, mi_t, mi_t, balr_inputs=(pred, target))
    assert parts["balr"].item() == pytest.approx(L.listwise_ranking_loss(pred, target).item(), rel=1e-6)


def test_errors_name_the_argument(gen):
    with pytest.raises(ValueError, match="target has 3 values"):
        L.distribution_loss(torch.randn(4, 20), torch.ones(3))
    with pytest.raises(ValueError, match="logits must be"):
        L.distribution_loss(torch.randn(20), torch.ones(1))
    with pytest.raises(ValueError, match="pred must be 1-D"):
        L.listwise_ranking_loss(torch.randn(4, 1), torch.ones(4))
    with pytest.raises(ValueError, match="text_emb must have the same shape"):
        L.score_anchored_alignment_loss(torch.randn(4, 8), torch.randn(4, 6), torch.ones(4))
    with pytest.raises(ValueError, match="ta_target has 3 values"):
        L.score_anchored_alignment_loss(torch.randn(4, 8), torch.randn(4, 8), torch.ones(3))
    with pytest.raises(ValueError, match="mapping must be one of"):
        L.score_anchored_alignment_loss(torch.randn(4, 8), torch.randn(4, 8), torch.ones(4), mapping="cos")
    with pytest.raises(ValueError, match="NaN"):
        L.listwise_ranking_loss(torch.randn(2), torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="pred must be a torch.Tensor"):
        L.regression_loss([1.0, 2.0], torch.ones(2))
    with pytest.raises(ValueError, match="temperature"):
        L.listwise_ranking_loss(torch.randn(2), torch.ones(2), temperature=0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        L.regression_loss(torch.randn(2), torch.ones(2), kind="huber")
    with pytest.raises(ValueError, match="mi_target has 5 values"):
        L.deramos_loss(_out(gen), torch.ones(5), torch.ones(6))
    with pytest.raises(ValueError, match="LossWeights.objective"):
        L.deramos_loss(_out(gen), torch.ones(6), torch.ones(6), L.LossWeights(objective="ranking"))
    with pytest.raises(TypeError, match="attribute 'audio_embedding'"):
        L.deramos_loss(
            SimpleNamespace(mi_logits=torch.randn(2, 20), ta_logits=torch.randn(2, 20), mi=torch.rand(2)),
            torch.ones(2),
            torch.ones(2),
        )
    with pytest.raises(ValueError, match="unknown loss preset"):
        L.LossWeights.preset("everything")


def _np_contrast(own, swapped, target, valid, temperature=0.5, low=1.0, high=5.0) -> float:
    weight = np.clip((target - low) / (high - low), 0.0, 1.0) * valid
    softplus = np.log1p(np.exp((swapped - own) / temperature))
    return float((weight * softplus).sum() / max(valid.sum(), 1))


def test_prompt_contrast_value_and_gradient():
    own = torch.tensor([4.0, 2.0, 3.0, 1.5], requires_grad=True)
    swapped = torch.tensor([3.0, 2.5, 3.0, 4.0], requires_grad=True)
    target = torch.tensor([5.0, 3.0, 1.0, 4.0])
    valid = torch.tensor([True, True, True, False])
    loss = L.prompt_contrast_loss(own, swapped, target, valid, temperature=0.5)
    expected = _np_contrast(own.detach().numpy(), swapped.detach().numpy(), target.numpy(), valid.numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/d own_i = -w_i * sigmoid((s_i - o_i) / T) / T / n_valid; the TA-1 clip and the invalid pair get none
    z = (swapped - own).detach() / 0.5
    w = torch.tensor([1.0, 0.5, 0.0, 0.0])
    torch.testing.assert_close(own.grad, -w * torch.sigmoid(z) / 0.5 / 3)
    torch.testing.assert_close(swapped.grad, -own.grad)


def test_prompt_contrast_prefers_the_own_prompt_and_ignores_a_shared_shift():
    target = torch.full((3,), 5.0)
    right = L.prompt_contrast_loss(torch.tensor([4.0, 4.0, 4.0]), torch.tensor([2.0, 2.0, 2.0]), target)
    wrong = L.prompt_contrast_loss(torch.tensor([2.0, 2.0, 2.0]), torch.tensor([4.0, 4.0, 4.0]), target)
    shifted = L.prompt_contrast_loss(torch.tensor([3.0, 3.0, 3.0]), torch.tensor([1.0, 1.0, 1.0]), target)
    assert right.item() < wrong.item()
    assert shifted.item() == pytest.approx(right.item(), rel=1e-6)
    none_valid = L.prompt_contrast_loss(target, target, target, torch.zeros(3, dtype=torch.bool))
    assert none_valid.item() == 0.0


def test_deramos_loss_adds_the_weighted_contrast(gen):
    out = _out(gen)
    mi_t = torch.linspace(1, 5, 6)
    ta_t = torch.tensor([4.0, 1.2, 3.0, 2.6, 4.8, 2.0])
    swapped = torch.randn(6, generator=gen) + 3.0
    valid = torch.tensor([True] * 5 + [False])
    w = L.LossWeights(use_contrast=True, gamma=2.0, contrast_temperature=0.25)
    total, parts = L.deramos_loss(out, mi_t, ta_t, w, contrast_inputs=(swapped, valid))
    contrast = L.prompt_contrast_loss(out.ta, swapped, ta_t, valid, temperature=0.25)
    _, plain = L.deramos_loss(out, mi_t, ta_t)
    assert parts["contrast"].item() == pytest.approx(contrast.item(), rel=1e-6)
    assert total.item() == pytest.approx(plain["total"].item() + 2.0 * contrast.item(), rel=1e-6)
    assert "contrast" not in plain
    with pytest.raises(TypeError, match="contrast_inputs must be a pair"):
        L.deramos_loss(out, mi_t, ta_t, w)
    with pytest.raises(ValueError, match="ta_swapped has 5 values"):
        L.deramos_loss(out, mi_t, ta_t, w, contrast_inputs=(swapped[:5], valid))
    with pytest.raises(TypeError, match="valid must be a bool"):
        L.deramos_loss(out, mi_t, ta_t, w, contrast_inputs=(swapped, valid.float()))
    with pytest.raises(ValueError, match="contrast_temperature"):
        L.LossWeights(use_contrast=True, contrast_temperature=0.0).validate()
    with pytest.raises(ValueError, match="gamma"):
        L.LossWeights(gamma=-1.0).validate()
