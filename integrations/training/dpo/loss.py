"""Preference tuning of MusicGen with DeRA-MOS: the DPO loss and preference pairs.

- :func:`dpo_loss` is a plain tensor function with trl's conventions (trl 1.16, ``DPOTrainer._compute_loss``
  with the default ``f_divergence_type="reverse_kl"``). trl only computes the loss inside its trainer,
  from a causal-LM forward pass over token sequences, so it cannot score MusicGen's delayed
  multi-codebook codes; this function takes sequence log-probabilities from
  :mod:`deramos_reward.integrations.musicgen.logprobs` instead.
- Pairs: :func:`generate_pairs` (any generator) / :func:`musicgen_pairs` (a MusicGen of either library)
  generate ``N`` candidates per prompt (with their codes), score them with a reward, and keep chosen/rejected pairs
  (:func:`select_pairs`: best vs worst, or every pair above a score margin with a cap per prompt) as a
  Hugging Face ``datasets.Dataset`` (:func:`build_pairs`, :func:`save_pairs`, :func:`load_pairs`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["DPO_LOSS_TYPES", "DPOLoss", "dpo_loss"]

DPO_LOSS_TYPES = ("sigmoid", "ipo")


class DPOLoss(NamedTuple):
    """Per-pair DPO outputs; unpacks as ``losses, chosen_rewards, rejected_rewards``.

    Attributes:
        losses: ``[B]`` loss per pair (average it for the batch loss).
        chosen_rewards: ``[B]`` implicit reward ``beta * (log pi(chosen) - log ref(chosen))``, detached.
        rejected_rewards: ``[B]`` the same for the rejected sample, detached.
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def _check_vector(name: str, x: torch.Tensor, shape: torch.Size | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B], got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape [B] with B >= 1, got {tuple(x.shape)}")
    if shape is not None and x.shape != shape:
        raise ValueError(
            f"{name} must have the same shape as policy_chosen_logps {tuple(shape)}, got {tuple(x.shape)}"
        )
    return x


def _check_lengths(name: str, x: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B] or None, got {type(x).__name__}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} (one count per pair), got {tuple(x.shape)}")
    if bool((x <= 0).any()):
        raise ValueError(f"{name} must be positive token counts")
    return x


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DPOLoss:
    """Direct preference optimisation loss per pair, with trl's conventions.

    With ``chosen_logratio = policy_chosen_logps - ref_chosen_logps`` (same for rejected) and
    ``delta = chosen_logratio - rejected_logratio``:

    - ``"sigmoid"`` (DPO): ``-(1 - ls) * logsigmoid(beta * delta) - ls * logsigmoid(-beta * delta)``
      with ``ls = label_smoothing`` (conservative DPO; ``ls = 0`` is trl 1.16's sigmoid loss, which
      has no label smoothing; trl < 1.0 used this same form).
    - ``"ipo"``: ``(delta' - 1 / (2 * beta)) ** 2`` where ``beta`` is IPO's tau. trl 1.16 divides each
      log-ratio by its number of completion tokens before taking ``delta'``; pass ``chosen_lengths``
      and ``rejected_lengths`` (e.g. ``mask.sum((1, 2))`` from the log-prob functions) to do the same;
      without them ``delta' = delta`` (the IPO paper's sequence-level form).

    Rewards follow trl: ``chosen_rewards = beta * chosen_logratio`` (detached), same for rejected.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: ``[B]``
            sequence log-probabilities (sum over tokens) under the trained policy and the reference.
        beta: positive temperature (DPO) or regularisation tau (IPO).
        loss_type: one of :data:`DPO_LOSS_TYPES`.
        label_smoothing: in ``[0, 0.5)``, sigmoid loss only.
        chosen_lengths, rejected_lengths: ``[B]`` positive token counts, IPO only (both or neither).

    Returns:
        :class:`DPOLoss` ``(losses [B], chosen_rewards [B], rejected_rewards [B])``.
    """
    _check_vector("policy_chosen_logps", policy_chosen_logps, None)
    shape = policy_chosen_logps.shape
    _check_vector("policy_rejected_logps", policy_rejected_logps, shape)
    _check_vector("ref_chosen_logps", ref_chosen_logps, shape)
    _check_vector("ref_rejected_logps", ref_rejected_logps, shape)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(f"label_smoothing must be a number, got {type(label_smoothing).__name__}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    chosen_lengths = _check_lengths("chosen_lengths", chosen_lengths, shape)
    rejected_lengths = _check_lengths("rejected_lengths", rejected_lengths, shape)
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("chosen_lengths and rejected_lengths must be given together")

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps

    if loss_type == "sigmoid":
        if chosen_lengths is not None:
            raise ValueError("chosen_lengths/rejected_lengths are only used by loss_type='ipo'")
        logits = beta * (chosen_logratios - rejected_logratios)
        losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    else:  # ipo
        if label_smoothing != 0.0:
            raise ValueError("label_smoothing is not used by loss_type='ipo'; leave it at 0")
        if chosen_lengths is not None:
            chosen_scores = chosen_logratios / chosen_lengths.to(chosen_logratios.dtype)
            rejected_scores = rejected_logratios / rejected_lengths.to(rejected_logratios.dtype)
        else:
            chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
        losses = (chosen_scores - rejected_scores - 1.0 / (2.0 * beta)) ** 2

    return DPOLoss(losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach())
