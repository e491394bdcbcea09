"""Straight-through decoding for AudioCraft's MusicGen: its compression model's codebooks and decoder
(the estimator is in :mod:`..straight_through`).
"""

from __future__ import annotations

from typing import Any

import torch

from deramos_reward.integrations.musicgen.logprobs import check_codes
from deramos_reward.integrations.musicgen.straight_through import (
    channel_split,
    check_match,
    check_weights,
    soft_codebook_lookup,
    straight_through_decode,
)

# --------------------------------------------------------------------------------------- audiocraft


def _audiocraft_mono(compression: Any, weights: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    """``EncodecModel.decode(codes, None)`` with a soft codebook lookup: ``[B, K, S, card]`` -> ``[B, C, T]``."""
    quantizer = getattr(compression, "quantizer", None)
    layers = getattr(getattr(quantizer, "vq", None), "layers", None)
    if layers is None or not hasattr(compression, "decoder"):
        raise TypeError(
            "the AudioCraft compression model must be an EncodecModel with a residual vector quantizer "
            f"(quantizer.vq.layers), got {type(compression).__name__}"
        )
    if weights.shape[1] > len(layers):
        raise ValueError(f"logits/weights have {weights.shape[1]} codebooks, the codec has {len(layers)}")
    check_match(weights, codes, weights.shape[1], int(layers[0].codebook.shape[0]))
    # the library's order: 0.0 + q_0 + q_1 + ... (ResidualVectorQuantization.decode)
    embeddings = torch.tensor(0.0, device=weights.device)
    for k in range(weights.shape[1]):
        layer = layers[k]
        layer_codes = None if codes is None else codes[:, k]
        quantized = layer.project_out(soft_codebook_lookup(weights[:, k], layer.codebook, layer_codes))
        if not layer.channels_last:
            quantized = quantized.permute(0, 2, 1)
        embeddings = embeddings + quantized
    return compression.postprocess(compression.decoder(embeddings), None)


def audiocraft_soft_decode(
    musicgen: Any, weights: torch.Tensor, codes: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft-decode codebook weights with an AudioCraft MusicGen's compression model.

    Args:
        musicgen: AudioCraft ``MusicGen`` (its ``compression_model`` is an ``EncodecModel``, or the
            ``InterleaveStereoCompressionModel`` wrapper of one).
        weights: ``[B, K, S, card]`` weights over each codebook's entries (e.g. a straight-through one-hot).
        codes: ``[B, K, S]`` or None; given, the value is exactly the hard decoding of ``codes``.

    Returns:
        audio ``[B, C, T]``, as ``musicgen.generate_audio(codes)`` decodes.
    """
    compression = getattr(musicgen, "compression_model", None)
    if compression is None:
        raise TypeError(f"musicgen must be an AudioCraft MusicGen, got {type(musicgen).__name__}")
    weights = check_weights(weights)
    if codes is not None:
        codes = check_codes(codes).to(weights.device)
    if weights.shape[1] != compression.num_codebooks:
        raise ValueError(
            f"logits/weights must have K={compression.num_codebooks} codebooks (dim 1), got {tuple(weights.shape)}"
        )
    inner = getattr(compression, "model", None)
    if inner is None or not hasattr(compression, "get_left_right_codes"):
        return _audiocraft_mono(compression, weights, codes)
    per_timestep = bool(compression.per_timestep)
    left, right = channel_split(weights, per_timestep)
    left_codes, right_codes = (None, None) if codes is None else channel_split(codes, per_timestep)
    return torch.cat(
        [_audiocraft_mono(inner, left, left_codes), _audiocraft_mono(inner, right, right_codes)], dim=1
    )


def audiocraft_decode_differentiable(
    musicgen: Any, codes: torch.Tensor, logits: torch.Tensor, *, gradient_checkpointing: bool = False
) -> torch.Tensor:
    """Decode codes with an AudioCraft MusicGen so that gradients reach ``logits``.

    Args:
        musicgen: AudioCraft ``MusicGen``.
        codes: ``[B, K, S]`` sampled codes, as ``musicgen.generate(..., return_tokens=True)`` returns.
        logits: ``[B, K, S, card]`` teacher-forced logits of ``codes`` (with gradient).
        gradient_checkpointing: recompute the codec's activations during backward.

    Returns:
        audio ``[B, C, T]``: the value of ``musicgen.generate_audio(codes)``, differentiable with respect
        to ``logits`` through the straight-through softmax.
    """
    return straight_through_decode(audiocraft_soft_decode, musicgen, codes, logits, gradient_checkpointing)
