"""Straight-through decoding for transformers' MusicGen: its EnCodec's codebooks and decoder
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

# ------------------------------------------------------------------------------------- transformers


def _transformers_mono(encodec: Any, weights: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    """``EncodecModel._decode_frame`` with a soft codebook lookup: ``[B, K, S, card]`` -> ``[B, 1, T]``."""
    layers = encodec.quantizer.layers
    if weights.shape[1] > len(layers):
        raise ValueError(f"logits/weights have {weights.shape[1]} codebooks, the codec has {len(layers)}")
    card = layers[0].codebook.embed.shape[0]
    check_match(weights, codes, weights.shape[1], card)
    # the library's order: 0.0 + q_0 + q_1 + ... (EncodecResidualVectorQuantizer.decode)
    embeddings = torch.tensor(0.0, device=weights.device)
    for k in range(weights.shape[1]):
        layer_codes = None if codes is None else codes[:, k]
        quantized = soft_codebook_lookup(weights[:, k], layers[k].codebook.embed, layer_codes)
        embeddings = embeddings + quantized.permute(0, 2, 1)
    return encodec.decoder(embeddings)


def _transformers_parts(model: Any) -> tuple[Any, int, int]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    encodec = getattr(base, "audio_encoder", None)
    decoder = getattr(base, "decoder", None)
    if encodec is None or not hasattr(encodec, "quantizer") or decoder is None:
        raise TypeError(
            f"model must be a transformers MusicgenForConditionalGeneration, got {type(model).__name__}"
        )
    if getattr(encodec.config, "chunk_length", None) is not None:
        raise ValueError(
            "EnCodec models that decode in overlapping chunks (config.chunk_length_s set) are not supported; "
            "MusicGen's 32 kHz EnCodec decodes in one chunk"
        )
    return encodec, int(decoder.config.audio_channels), int(decoder.num_codebooks)


def transformers_soft_decode(
    model: Any, weights: torch.Tensor, codes: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft-decode codebook weights with a transformers MusicGen's EnCodec.

    Args:
        model: ``MusicgenForConditionalGeneration`` (or a peft wrapper of it).
        weights: ``[B, K, S, card]`` weights over each codebook's entries (e.g. a straight-through
            one-hot); stereo models take ``K = 2 * codebooks per channel``, interleaved like ``generate``
            (even codebooks: left, odd: right).
        codes: ``[B, K, S]`` or None; given, the value is exactly the hard decoding of ``codes``.

    Returns:
        audio ``[B, C, T]`` (``T = S * hop``), as ``model.generate`` decodes its codes.
    """
    encodec, channels, num_codebooks = _transformers_parts(model)
    weights = check_weights(weights)
    if codes is not None:
        codes = check_codes(codes).to(weights.device)
    if weights.shape[1] != num_codebooks:
        raise ValueError(
            f"logits/weights must have K={num_codebooks} codebooks (dim 1), got {tuple(weights.shape)}"
        )
    if channels == 1:
        return _transformers_mono(encodec, weights, codes)
    left, right = channel_split(weights)
    left_codes, right_codes = (None, None) if codes is None else channel_split(codes)
    return torch.cat(
        [_transformers_mono(encodec, left, left_codes), _transformers_mono(encodec, right, right_codes)],
        dim=1,
    )


def transformers_decode_differentiable(
    model: Any, codes: torch.Tensor, logits: torch.Tensor, *, gradient_checkpointing: bool = False
) -> torch.Tensor:
    """Decode codes with a transformers MusicGen so that gradients reach ``logits``.

    Args:
        model: ``MusicgenForConditionalGeneration`` (or a peft wrapper of it).
        codes: ``[B, K, S]`` sampled codes (no delay padding), as the backend's ``generate`` returns.
        logits: ``[B, K, S, card]`` teacher-forced logits of ``codes`` (with gradient).
        gradient_checkpointing: recompute the codec's activations during backward instead of keeping
            them (memory of one decoder pass less, one decoder pass more time).

    Returns:
        audio ``[B, C, T]``: the value of ``audio_encoder.decode(codes)`` (what ``generate`` returns),
        differentiable with respect to ``logits`` through the straight-through softmax.
    """
    return straight_through_decode(transformers_soft_decode, model, codes, logits, gradient_checkpointing)
