"""Straight-through decoding of MusicGen codes: audio whose gradient reaches the LM's logits.

MusicGen samples discrete codes ``[B, K, S]`` (``K`` codebooks, ``S`` frames) and its codec turns them
into audio. Sampling has no gradient, so a reward of the audio cannot be backpropagated into the LM.
The straight-through estimator makes the path differentiable without changing its forward value:

1. ``probs = softmax(logits)`` over the ``card`` entries of each codebook (teacher-forced logits
   ``[B, K, S, card]`` of the sampled codes);
2. ``one_hot = hard + probs - stop_gradient(probs)``: forward value exactly ``one_hot(codes)``, backward
   through the softmax (:func:`straight_through_one_hot`);
3. a soft lookup in each codebook of the codec's residual vector quantizer, ``one_hot @ codebook_k``,
   summed over the codebooks like the RVQ sums its layers (:func:`soft_codebook_lookup`);
4. the codec's own decoder (and its post-processing), unchanged.

The forward value equals the library's own decoding of ``codes`` (the hard lookup is computed exactly
as the library computes it; the soft term is added as ``soft - soft.detach()``, an exact zero, so this
holds under bf16 autocast and TF32 matmuls too). Gradients with respect to the logits are those of the
soft path at the one-hot point: ``d audio / d logits = d decoder / d emb @ codebook^T @ d softmax``.

Two libraries, one function each:

- :func:`transformers_decode_differentiable` for a transformers ``MusicgenForConditionalGeneration``
  (``model.audio_encoder``: EnCodec, ``quantizer.layers[k].codebook.embed`` + ``decoder``), what
  ``model.generate`` does to its codes (stereo models decode the even and odd codebooks as the two
  channels);
- :func:`audiocraft_decode_differentiable` for an AudioCraft ``MusicGen`` (``compression_model``: an
  ``EncodecModel`` with an RVQ, or the interleaved-stereo wrapper around one), what
  ``musicgen.generate_audio`` does (``compression_model.decode(codes, None)``: RVQ sum, decoder,
  ``postprocess`` with no scale).

``*_soft_decode(model, weights, codes=None)`` are the underlying soft-decode paths: ``weights
[B, K, S, card]`` on the simplex (or any real weights) -> audio. With ``codes=None`` they are the
plain soft lookup + decoder, a smooth function the tests check against finite differences in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from deramos_reward.integrations.musicgen.logprobs import check_codes

__all__ = ["straight_through_one_hot", "soft_codebook_lookup"]


# ------------------------------------------------------------------------------------------ checks


def check_weights(weights: Any, name: str = "weights") -> torch.Tensor:
    if not isinstance(weights, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape [B, K, S, card], got {type(weights).__name__}"
        )
    if weights.dim() != 4:
        raise ValueError(f"{name} must have shape [B, K, S, card], got {tuple(weights.shape)}")
    if not weights.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {weights.dtype}")
    if weights.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(weights.shape)}")
    return weights


def check_match(weights: torch.Tensor, codes: torch.Tensor | None, num_codebooks: int, card: int) -> None:
    """``weights [B, K, S, card]`` (and ``codes [B, K, S]``) against the codec's codebooks."""
    if weights.shape[1] != num_codebooks or weights.shape[-1] != card:
        raise ValueError(
            f"logits/weights must have shape [B, {num_codebooks}, S, {card}] for this codec "
            f"({num_codebooks} codebooks of {card} entries), got {tuple(weights.shape)}"
        )
    if codes is not None:
        if tuple(codes.shape) != tuple(weights.shape[:3]):
            raise ValueError(
                f"codes {tuple(codes.shape)} and logits {tuple(weights.shape)} must agree on [B, K, S]"
            )
        if int(codes.min()) < 0 or int(codes.max()) >= card:
            raise ValueError(
                f"codes must hold ids in [0, {card}), got values in [{int(codes.min())}, {int(codes.max())}]"
            )


# ------------------------------------------------------------------------------------- the estimator


def straight_through_one_hot(codes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Straight-through one-hot of ``codes`` with the gradient of ``softmax(logits)``.

    Args:
        codes: ``[B, K, S]`` sampled code ids in ``[0, card)``.
        logits: ``[B, K, S, card]`` teacher-forced logits of those codes (any float dtype; the
            softmax runs in float32 at least).

    Returns:
        ``[B, K, S, card]`` float32 (float64 for float64 logits) whose value is exactly
        ``one_hot(codes)`` and whose gradient is that of ``softmax(logits, -1)``.
    """
    codes = check_codes(codes)
    logits = check_weights(logits, "logits")
    if tuple(codes.shape) != tuple(logits.shape[:3]):
        raise ValueError(
            f"codes {tuple(codes.shape)} and logits {tuple(logits.shape)} must agree on [B, K, S]"
        )
    card = logits.shape[-1]
    if int(codes.min()) < 0 or int(codes.max()) >= card:
        raise ValueError(
            f"codes must hold ids in [0, {card}), got values in [{int(codes.min())}, {int(codes.max())}]"
        )
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    probs = torch.softmax(logits.to(dtype), dim=-1)
    hard = F.one_hot(codes.to(logits.device), card).to(dtype)
    return hard + (probs - probs.detach())


def soft_codebook_lookup(
    weights: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted sum of codebook rows: ``weights @ codebook``, optionally with an exact forward value.

    Args:
        weights: ``[..., card]`` (a straight-through one-hot, probabilities, or any weights).
        codebook: ``[card, D]``.
        codes: ``[...]`` ids or None. Given, the result's value is exactly the library's hard lookup
            ``F.embedding(codes, codebook)`` and its gradient that of ``weights @ codebook``.

    Returns:
        ``[..., D]`` in the codebook's dtype (the hard value) or the matmul's dtype (``codes=None``).
    """
    soft = weights.to(codebook.dtype) @ codebook
    if codes is None:
        return soft
    return F.embedding(codes, codebook) + (soft - soft.detach())


def straight_through_decode(
    soft_decode: Callable[..., torch.Tensor],
    model: Any,
    codes: Any,
    logits: Any,
    gradient_checkpointing: bool,
) -> torch.Tensor:
    one_hot = straight_through_one_hot(codes, logits)  # checks codes; soft_decode converts them
    if not gradient_checkpointing:
        return soft_decode(model, one_hot, codes)
    # Keep only the one-hot; the codec's activations are recomputed during backward.
    return checkpoint(lambda w: soft_decode(model, w, codes), one_hot, use_reentrant=False)


def channel_split(tensor: torch.Tensor, per_timestep: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved stereo ``[B, 2K, S, ...]`` -> (left, right); ``per_timestep``: ``[B, K, 2S, ...]``."""
    if per_timestep:
        return tensor[:, :, 0::2], tensor[:, :, 1::2]
    return tensor[:, 0::2], tensor[:, 1::2]
