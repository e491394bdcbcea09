"""The online RL objective as plain tensor functions: group advantages, reward shaping, clipped loss, KL.

Samples come in groups: ``N = P * G`` rewards, the ``G`` samples of each prompt next to each other
(``[p0 s0, p0 s1, ..., p1 s0, ...]``). Advantages are computed inside each group only:

- GRPO (trl's ``GRPOTrainer``): ``A_i = (r_i - mean_g) / (std_g + 1e-4)`` with the unbiased group std
  (``scale_rewards="group"``), the batch std (``"batch"``) or no scaling (``"none"``);
- RLOO: ``A_i = r_i - mean_{j != i} r_j``, the mean of the other ``G - 1`` samples of the group.

The loss is trl's clipped surrogate on per-token log-probabilities, plus ``beta`` times a per-token
KL(policy || reference)::

    ratio = exp(logp - old_logp)
    token_loss = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * kl
    kl = exp(ref_logp - logp) - (ref_logp - logp) - 1          (k3: >= 0, unbiased, from the sampled code)
    kl = sum_v p_v (log p_v - log q_v)                          (exact: all codes of the position)

averaged over valid tokens as ``loss_type`` says. Token tensors have any trailing shape (MusicGen:
``[B, K, S]``); they are flattened to ``[B, T]``.

The policy's distribution, shared by online RL and reward backpropagation: :func:`policy_tokens` turns
the (guided) logits into ``softmax(logits / temperature)`` once, and everything else (the sampled
codes' log-probs, :func:`token_entropy`, :func:`token_kl` with either :data:`KL_ESTIMATORS` entry)
is read off that one log-softmax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from deramos_reward.integrations.musicgen.logprobs import masked_log_softmax

__all__ = [
    "KL_ESTIMATORS",
    "PolicyLoss",
    "PolicyTokens",
    "clipped_policy_loss",
    "exact_kl",
    "grpo_advantages",
    "group_advantages",
    "k3_kl",
    "policy_tokens",
    "rloo_advantages",
    "shaped_rewards",
    "standardize_within_groups",
    "token_entropy",
    "token_kl",
]

KL_ESTIMATORS = ("exact", "k3")
"""Per-token KL(policy || reference) estimators (the configs' ``kl_estimator``): ``exact`` sums over all
codes of each sampled position's next-code distributions; ``k3`` is trl's one-sample estimate from the
sampled code's log-probabilities."""

STD_EPS = 1e-4
"""Added to a standard deviation before dividing by it (trl's value)."""


def _groups(values: torch.Tensor, group_size: int, name: str = "rewards") -> torch.Tensor:
    """[N] -> [P, G]."""
    if not isinstance(values, torch.Tensor) or values.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor [N], got {getattr(values, 'shape', type(values))}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2, got {group_size!r}")
    if values.numel() == 0 or values.numel() % group_size:
        raise ValueError(
            f"{name} has {values.numel()} entries, not a positive multiple of group_size={group_size}"
        )
    return values.reshape(-1, group_size)


def standardize_within_groups(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(x - group mean) / (unbiased group std + 1e-4)``: [N] -> [N]. A constant group gives zeros."""
    g = _groups(values, group_size, "values")
    z = (g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + STD_EPS)
    return z.reshape(-1)


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: str = "group") -> torch.Tensor:
    """GRPO advantages as trl computes them: [N] -> [N] (see the module docstring)."""
    g = _groups(rewards, group_size)
    centred = g - g.mean(1, keepdim=True)
    if scale_rewards == "group":
        centred = centred / (g.std(1, keepdim=True) + STD_EPS)
    elif scale_rewards == "batch":
        centred = centred / (rewards.std() + STD_EPS)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    return centred.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO advantages: each reward minus the mean of the other rewards of its group. [N] -> [N]"""
    g = _groups(rewards, group_size)
    others = (g.sum(1, keepdim=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)


def group_advantages(
    rewards: torch.Tensor, group_size: int, advantage: str = "grpo", scale_rewards: str = "group"
) -> torch.Tensor:
    """``advantage="grpo"`` (:func:`grpo_advantages`) or ``"rloo"`` (:func:`rloo_advantages`): [N] -> [N]."""
    if advantage == "grpo":
        return grpo_advantages(rewards, group_size, scale_rewards)
    if advantage == "rloo":
        return rloo_advantages(rewards, group_size)
    raise ValueError(f"advantage must be 'grpo' or 'rloo', got {advantage!r}")


def shaped_rewards(
    parts: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    group_size: int,
    normalize_per_axis: bool = True,
) -> torch.Tensor:
    """The scalar reward of each sample from its parts: ``sum_k w_k * part_k``, each part first
    standardised within its group when ``normalize_per_axis`` (so an axis with a larger scale or
    spread does not dominate the sum). ``parts``: name -> [N]; ``weights``: name -> float. -> [N]"""
    if not parts:
        raise ValueError("parts must hold at least one reward component")
    missing = sorted(set(parts) - set(weights))
    if missing:
        raise ValueError(f"weights has no entry for the reward parts {missing}")
    total = None
    for name, value in parts.items():
        value = value.double() if value.dtype == torch.float64 else value.float()
        term = (
            standardize_within_groups(value, group_size)
            if normalize_per_axis
            else _groups(value, group_size, name).reshape(-1)
        )
        term = weights[name] * term
        total = term if total is None else total + term
    return total


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference), as trl computes it:
    ``exp(ref - logp) - (ref - logp) - 1`` (same shape as the inputs, >= 0)."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def exact_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-position KL(policy || reference) of two log-softmaxes ``[..., V]`` -> ``[...]``:
    ``sum_v p_v (log p_v - log q_v)``; the reference is a constant (detached)."""
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)} and ref_log_probs {tuple(ref_log_probs.shape)} must match"
        )
    ref = ref_log_probs.detach().to(log_probs.dtype)
    return (log_probs.exp() * (log_probs - ref)).sum(-1)


class PolicyTokens(NamedTuple):
    """The policy's distribution at each code position (see :func:`policy_tokens`).

    ``logps`` ``[B, K, S]``: log-probability of each sampled code (0 where masked), with gradient;
    ``log_probs`` ``[B, K, S, V]``: the whole log-softmax (uniform where masked); ``mask`` ``[B, K, S]``."""

    logps: torch.Tensor
    log_probs: torch.Tensor
    mask: torch.Tensor


def policy_tokens(
    logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0
) -> PolicyTokens:
    """The sampling distribution ``softmax(logits / temperature)`` of logits ``[B, K, S, V]`` (guided
    ones when sampling guides) at the sampled ``codes [B, K, S]``: one log-softmax, in float32 at least.
    ``mask`` None counts every position."""
    if mask is None:
        mask = torch.ones(codes.shape, dtype=torch.bool, device=logits.device)
    scaled = logits if temperature == 1.0 else logits / temperature
    log_probs = masked_log_softmax(scaled, mask)
    logps = log_probs.gather(-1, codes.to(logits.device).long()[..., None]).squeeze(-1)
    logps = torch.where(mask, logps, torch.zeros((), dtype=logps.dtype, device=logps.device))
    return PolicyTokens(logps, log_probs, mask)


def token_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each position's distribution, log-softmax ``[..., V]`` -> ``[...]``, detached."""
    with torch.no_grad():
        return -(log_probs.exp() * log_probs).sum(-1)


def token_kl(
    estimator: str,
    logps: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    log_probs: torch.Tensor | None = None,
    ref_log_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token KL(policy || reference) ``[B, K, S]`` by ``estimator`` (one of :data:`KL_ESTIMATORS`):
    ``k3`` needs ``logps``/``ref_logps`` (the sampled codes'), ``exact`` the whole log-softmaxes
    ``log_probs``/``ref_log_probs`` ``[B, K, S, V]``. Gradient flows through the policy's side only."""
    if estimator == "k3":
        if ref_logps is None:
            raise ValueError("the k3 KL needs ref_logps")
        return k3_kl(logps, ref_logps.detach().to(logps.dtype))
    if estimator == "exact":
        if log_probs is None or ref_log_probs is None:
            raise ValueError("the exact KL needs log_probs and ref_log_probs")
        return exact_kl(log_probs, ref_log_probs)
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


class PolicyLoss(NamedTuple):
    """What :func:`clipped_policy_loss` returns. ``loss``: the scalar to minimise; ``token_loss``
    ``[B, T]`` (0 at masked tokens); ``kl``, ``clip_ratio_low``, ``clip_ratio_high``, ``clip_ratio``:
    means over valid tokens (detached), where a token counts as clipped low when its ratio is below
    ``1 - eps_low`` with a negative advantage, high when above ``1 + eps_high`` with a positive one."""

    loss: torch.Tensor
    token_loss: torch.Tensor
    kl: torch.Tensor
    clip_ratio_low: torch.Tensor
    clip_ratio_high: torch.Tensor
    clip_ratio: torch.Tensor


def _flat(x: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != batch:
        raise ValueError(
            f"{name} must be a [B, ...] tensor with B={batch}, got {getattr(x, 'shape', type(x))}"
        )
    return x.reshape(batch, -1)


def clipped_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    loss_type: str = "dapo",
    num_items: float | torch.Tensor | None = None,
    max_tokens: int | None = None,
    kl: torch.Tensor | None = None,
) -> PolicyLoss:
    """trl's GRPO loss on per-token log-probabilities.

    Args:
        logps: ``[B, ...]`` log-probabilities of the sampled tokens under the policy being optimised
            (with gradient).
        old_logps: ``[B, ...]`` the same under the policy that sampled them (no gradient).
        advantages: ``[B]`` one advantage per sample.
        mask: ``[B, ...]`` bool, the tokens that count.
        epsilon, epsilon_high: clip range ``[1 - epsilon, 1 + (epsilon_high or epsilon)]``.
        beta: weight of the per-token KL: ``kl`` (``[B, ...]``, e.g. :func:`token_kl`) when given, else
            the k3 estimate from ``ref_logps`` (``[B, ...]``); one of them is required when ``beta > 0``.
        loss_type: ``grpo`` (mean over each sequence's tokens, then over sequences), ``bnpo`` (mean over
            the batch's tokens), ``dr_grpo`` (sum / (B * ``max_tokens``), default the tokens per sequence),
            ``dapo`` (sum / ``num_items``, default the batch's valid tokens; pass the count over all
            processes and micro-batches divided accordingly to match trl exactly).
    Returns:
        :class:`PolicyLoss`.
    """
    batch = advantages.shape[0] if isinstance(advantages, torch.Tensor) and advantages.dim() == 1 else -1
    if batch < 1:
        raise ValueError(
            f"advantages must be a non-empty [B] tensor, got {getattr(advantages, 'shape', advantages)}"
        )
    logps = _flat(logps, batch, "logps")
    old_logps = _flat(old_logps, batch, "old_logps").to(logps.dtype)
    m = _flat(mask, batch, "mask")
    if m.dtype != torch.bool or m.shape != logps.shape or old_logps.shape != logps.shape:
        raise ValueError("mask must be bool and logps, old_logps, mask must have the same shape")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    adv = advantages.to(logps.dtype)[:, None]
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    token_loss = -torch.min(ratio * adv, clipped * adv)
    if beta:
        if kl is not None:
            kl = _flat(kl, batch, "kl").to(logps.dtype)
        elif ref_logps is not None:
            kl = k3_kl(logps, _flat(ref_logps, batch, "ref_logps").to(logps.dtype))
        else:
            raise ValueError("kl or ref_logps is required when beta > 0")
        token_loss = token_loss + beta * kl
    else:
        kl = None
    mf = m.to(logps.dtype)
    token_loss = token_loss * mf
    loss = _aggregate(token_loss, mf, loss_type, num_items, max_tokens)
    count = mf.sum().clamp_min(1.0)
    with torch.no_grad():
        low = ((ratio < 1 - epsilon) & (adv < 0) & m).sum() / count
        high = ((ratio > 1 + eps_high) & (adv > 0) & m).sum() / count
        kl_mean = (kl * mf).sum() / count if kl is not None else torch.zeros((), dtype=logps.dtype)
    return PolicyLoss(loss, token_loss, kl_mean.detach(), low, high, low + high)


def _aggregate(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    num_items: float | torch.Tensor | None,
    max_tokens: int | None,
) -> torch.Tensor:
    if loss_type == "grpo":
        return (token_loss.sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()
    if loss_type == "bnpo":
        return token_loss.sum() / mask.sum().clamp_min(1.0)
    if loss_type == "dr_grpo":
        return token_loss.sum() / (token_loss.shape[0] * (max_tokens or token_loss.shape[1]))
    if loss_type == "dapo":
        items = mask.sum() if num_items is None else torch.as_tensor(num_items, dtype=token_loss.dtype)
        return token_loss.sum() / items.clamp_min(1.0)
    raise ValueError(f"loss_type must be one of ('grpo', 'bnpo', 'dr_grpo', 'dapo'), got {loss_type!r}")
