"""Argument checks of the training losses (``deramos_reward.losses``).

Each returns the checked tensor (or raises a ``TypeError`` / ``ValueError`` naming the argument and
what was expected), so the objectives run on tensors whose shapes and values are known to be right.
Labels are turned into constants in the predictions' dtype and device (``as_label``).
"""

from __future__ import annotations

import torch


def float_tensor(x: object, name: str) -> torch.Tensor:
    """``x`` must be a floating ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def vector(x: object, name: str) -> torch.Tensor:
    """``x`` must be a non-empty floating vector [B]."""
    x = float_tensor(x, name)
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D [B], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; expected a batch of at least one value")
    return x


def check_batch(target: torch.Tensor, name: str, batch: int) -> None:
    """``target`` [B] must hold one value per prediction (``batch``)."""
    if target.shape[0] != batch:
        raise ValueError(f"{name} has {target.shape[0]} values but the predictions have batch size {batch}")


def checked_target(target: object, name: str, batch: int) -> torch.Tensor:
    """Check a label vector [B]: batch size ``batch``, finite values."""
    target = vector(target, name)
    check_batch(target, name, batch)
    if not torch.isfinite(target).all():
        raise ValueError(f"{name} contains NaN or Inf; every clip in a training batch needs a finite label")
    return target


def as_label(target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A checked label vector as a constant in ``like``'s dtype and device."""
    return target.detach().to(dtype=like.dtype, device=like.device)


def label_for(target: object, name: str, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``checked_target`` then ``as_label``: a finite label vector [B] as a constant like ``like``."""
    return as_label(checked_target(target, name, batch), like)


def check_range(low: float, high: float) -> None:
    """The rating scale [low, high] must be non-empty."""
    if not float(low) < float(high):
        raise ValueError(f"low ({low}) must be < high ({high})")


def checked_logits(logits: object, name: str) -> torch.Tensor:
    """``logits`` must be floating [B, n_bins] with B >= 1 and n_bins >= 2."""
    logits = float_tensor(logits, name)
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"{name} must be [B, n_bins] with B >= 1 and n_bins >= 2, got {tuple(logits.shape)}")
    return logits


def checked_embeddings(
    audio_emb: object, text_emb: object, names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two floating embeddings of one shape [B, D], B >= 1 (``names``: theirs, for the errors)."""
    audio_emb = float_tensor(audio_emb, names[0])
    text_emb = float_tensor(text_emb, names[1])
    if audio_emb.dim() != 2 or audio_emb.shape[0] == 0:
        raise ValueError(f"{names[0]} must be [B, D] with B >= 1, got shape {tuple(audio_emb.shape)}")
    if text_emb.shape != audio_emb.shape:
        raise ValueError(
            f"{names[1]} must have the same shape as {names[0]} {tuple(audio_emb.shape)}, got {tuple(text_emb.shape)}"
        )
    return audio_emb, text_emb


def swapped_scores(ta_swapped: object, ta_own: torch.Tensor) -> torch.Tensor:
    """The swapped-prompt scores, checked against ``ta_own`` and kept in the graph (unlike labels)."""
    ta_swapped = vector(ta_swapped, "ta_swapped")
    check_batch(ta_swapped, "ta_swapped", ta_own.shape[0])
    return ta_swapped


def valid_mask(valid: object, like: torch.Tensor) -> torch.Tensor:
    """A [B] bool mask (None = all True) -> float [B] on ``like``'s device and dtype."""
    if valid is None:
        return torch.ones_like(like)
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
        raise TypeError(f"valid must be a bool torch.Tensor [B], got {type(valid).__name__}")
    if valid.shape != like.shape:
        raise ValueError(f"valid must have shape {tuple(like.shape)}, got {tuple(valid.shape)}")
    return valid.to(device=like.device, dtype=like.dtype)
