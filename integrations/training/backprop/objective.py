"""The reward-backpropagation objective as plain functions of tensors and a backend.

For ``B`` sampled code sequences ``codes [B, K, S]`` with teacher-forced policy logits
``logits [B, K, S, card]`` (with gradient) and reference logits ``ref_logits`` (adapter disabled), both
the logits the codes were sampled from (guided when sampling guides)::

    audio  = backend.decode_differentiable(codes, truncate_gradient(logits / temperature, k))
    reward = reward_fn(audio, sample_rate, prompts)                               # [B], differentiable
    kl     = mean over positions of the per-token KL of softmax(logits / temperature)
             to softmax(ref_logits / temperature), by kl_estimator                # [B]
    loss   = -mean(reward) + beta * mean(kl)

The per-token KL and the entropy are online RL's (:func:`~deramos_reward.integrations.training.rl.objective.token_kl`,
:func:`~deramos_reward.integrations.training.rl.objective.token_entropy`): ``exact`` sums over all ``card`` entries of each sampled
position, ``k3`` is trl's one-sample estimate. The KL's gradient does not include the dependence of the
visited positions on the policy (as in trl).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from deramos_reward.integrations.musicgen.logprobs import masked_log_softmax
from deramos_reward.integrations.training.rl.objective import policy_tokens
from deramos_reward.integrations.training.rl.objective import token_entropy as rl_token_entropy
from deramos_reward.integrations.training.rl.objective import token_kl as rl_token_kl
from deramos_reward.reward import call_reward

__all__ = ["backprop_loss", "reward_values", "token_entropy", "token_kl", "truncate_gradient"]


def truncate_gradient(logits: torch.Tensor, frames: int | None) -> torch.Tensor:
    """DRaFT-K: keep the gradient of the last ``frames`` code frames only (same value everywhere).

    Args:
        logits: ``[B, K, S, card]``.
        frames: how many trailing frames keep their gradient; None (or ``>= S``) keeps all.

    Returns:
        ``[B, K, S, card]``, equal to ``logits``; frames ``< S - frames`` are detached.
    """
    if frames is None:
        return logits
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive int or None, got {frames!r}")
    steps = logits.shape[2]
    if frames >= steps:
        return logits
    keep = (torch.arange(steps, device=logits.device) >= steps - frames)[None, None, :, None]
    return torch.where(keep, logits, logits.detach())


def _sequence_mean(per_position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K, S]`` -> ``[B]``: the mean over each sequence's masked positions."""
    weights = mask.to(per_position.dtype)
    return (per_position * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1)


def token_kl(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    codes: torch.Tensor | None = None,
    estimator: str = "exact",
) -> torch.Tensor:
    """Mean per-position KL(policy || reference) of each sequence.

    Args:
        logits: ``[B, K, S, card]`` policy logits (gradient flows through them).
        ref_logits: ``[B, K, S, card]`` reference logits (treated as constants).
        mask: ``[B, K, S]`` bool, positions that count (None: all).
        codes: ``[B, K, S]`` the sampled codes (needed by ``k3``; default: the argmax, for ``exact``).
        estimator: ``exact`` (``sum_v p_v (log p_v - log q_v)``) or ``k3`` (see ``rl_objective``).

    Returns:
        ``[B]`` float32 (float64 for float64 logits), averaged over the masked positions of each sequence.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} must match")
    if codes is None:
        if estimator != "exact":
            raise ValueError(f"the {estimator} KL needs the sampled codes")
        codes = logits.detach().argmax(-1)
    policy = policy_tokens(logits, codes, mask)
    with torch.no_grad():
        reference = policy_tokens(ref_logits.detach(), codes, policy.mask)
    per_position = rl_token_kl(
        estimator, policy.logps, reference.logps, policy.log_probs, reference.log_probs
    )
    return _sequence_mean(per_position, policy.mask)


def token_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy (nats) of the next-code distributions: ``[B, K, S, card]`` -> scalar, no gradient."""
    with torch.no_grad():
        if mask is None:
            mask = torch.ones(logits.shape[:-1], dtype=torch.bool, device=logits.device)
        return rl_token_entropy(masked_log_softmax(logits, mask))[mask].mean()


def reward_values(
    reward: Callable[..., Any],
    audio: torch.Tensor,
    sample_rate: int,
    prompts: Sequence[str],
    *,
    gradient_checkpointing: bool = False,
) -> torch.Tensor:
    """``reward(audio [B, C, T], sample_rate, prompts)`` as a ``[B]`` tensor (a ``RewardOutput``'s
    ``.reward``; :func:`deramos_reward.reward.call_reward`), optionally under activation checkpointing;
    ValueError unless it is one finite value per clip.

    A reward that checkpoints itself (``reward.gradient_checkpointing`` true, e.g. a ``MusicReward`` built
    with ``gradient_checkpointing=True``, which keeps one chunk of clips at a time) is not wrapped again."""

    def run(wave: torch.Tensor) -> torch.Tensor:
        return call_reward(reward, wave, sample_rate, prompts)

    wrap = gradient_checkpointing and not getattr(reward, "gradient_checkpointing", False)
    return checkpoint(run, audio, use_reentrant=False) if wrap else run(audio)


def backprop_loss(
    backend: Any,
    reward: Callable[..., Any],
    prompts: Sequence[str],
    codes: torch.Tensor,
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    beta: float,
    temperature: float = 1.0,
    truncate_frames: int | None = None,
    gradient_checkpointing: bool = False,
    kl_estimator: str = "k3",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``loss = -mean(reward) + beta * mean(KL)`` for sampled ``codes [B, K, S]`` (module docstring);
    ``kl_estimator`` as the configs' (``k3`` or ``exact``).

    Returns:
        ``(loss, parts)``; ``parts`` holds ``reward [B]``, ``kl [B]`` (detached) and ``entropy`` (scalar).

    Raises:
        ValueError: the reward carries no gradient with respect to the audio (e.g. a rank-normalised
            ``MusicReward``), so there is nothing to backpropagate.
    """
    scaled = logits / temperature if temperature != 1.0 else logits
    st_logits = truncate_gradient(scaled, truncate_frames)
    audio = backend.decode_differentiable(codes, st_logits, gradient_checkpointing=gradient_checkpointing)
    values = reward_values(
        reward, audio, backend.sample_rate, prompts, gradient_checkpointing=gradient_checkpointing
    )
    if torch.is_grad_enabled() and not values.requires_grad:
        raise ValueError(
            "the reward carries no gradient with respect to the audio (a MusicReward with normalize='rank' "
            "or a reward computed outside torch?); reward backpropagation needs a differentiable reward"
        )
    policy = policy_tokens(scaled, codes, mask)
    with torch.no_grad():
        reference = policy_tokens(ref_logits.detach(), codes, policy.mask, temperature)
    per_token = rl_token_kl(
        kl_estimator, policy.logps, reference.logps, policy.log_probs, reference.log_probs
    )
    kl = _sequence_mean(per_token, policy.mask)
    loss = -values.float().mean() + beta * kl.mean()
    entropy = rl_token_entropy(policy.log_probs)[policy.mask].mean()
    parts = {"reward": values.detach().float(), "kl": kl.detach(), "entropy": entropy}
    return loss, parts
