"""Sequence log-probabilities and seeded generation with codes for transformers' MusicGen
(``MusicgenForConditionalGeneration``); the delay-pattern conventions are in :mod:`..logprobs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from deramos_reward._optional import require
from deramos_reward.integrations.musicgen.logprobs import (
    SequenceLogProbs,
    check_codes,
    check_guidance_scale,
    check_prompt_list,
    gather_logprobs,
    guided_logits,
    seeded,
    valid_steps_mask,
)

# ------------------------------------------------------------------------------------ transformers


def _capture_criterion(transformers: Any) -> Any:
    """A stopping criterion that never stops and keeps the latest raw decoder sequence ``[B*K, L]``."""

    class _CaptureSequence(transformers.StoppingCriteria):
        def __init__(self) -> None:
            self.sequence: torch.Tensor | None = None

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            self.sequence = input_ids
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return _CaptureSequence()


def _delay_mask(model: Any, batch: int, length: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """The decoder's delay-pattern mask ``[B*K, L]`` (-1 where a code goes) and the BOS/pad id."""
    decoder = model.decoder
    bos = model.generation_config.decoder_start_token_id
    if bos is None:
        bos = decoder.config.bos_token_id
    start = torch.full((batch * decoder.num_codebooks, 1), int(bos), dtype=torch.long, device=device)
    _, pattern = decoder.build_delay_pattern_mask(start, pad_token_id=int(bos), max_length=length)
    return pattern, int(bos)


def generate_with_codes(
    model: Any,
    processor: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    seed: int | None = None,
    **generate_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate with a transformers ``MusicgenForConditionalGeneration`` and return audio and codes.

    ``model.generate`` returns only audio (with ``return_dict_in_generate=True`` its ``.sequences``
    holds audio too). The codes are recovered exactly as ``generate`` computes them before decoding:
    the raw decoder sequence (captured by a stopping criterion that never stops), the decoder's delay
    pattern mask applied, BOS/pad positions removed.

    Args:
        model: ``MusicgenForConditionalGeneration`` (mono or stereo).
        processor: its ``MusicgenProcessor`` (text is tokenized with ``padding=True``).
        prompts: ``B`` text descriptions. For several samples per prompt, repeat prompts in the list
            (``num_return_sequences`` is rejected: MusicGen joins the samples along time).
        max_new_tokens: decoder steps; ``S = max_new_tokens + 1 - K`` code frames for mono models.
        seed: seeds torch's RNG for this call (caller's RNG state restored after); None keeps the
            current RNG.
        **generate_kwargs: passed to ``model.generate`` (``do_sample``, ``guidance_scale``, ``top_k``...).

    Returns:
        ``(audio [B, C, T], codes [B, K, S])``; codes are ``long`` on the model's device.
    """
    prompts = check_prompt_list(prompts)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    num_codebooks = model.decoder.num_codebooks
    if max_new_tokens + 1 < 2 * num_codebooks:
        raise ValueError(
            f"max_new_tokens must be at least {2 * num_codebooks - 1} for a {num_codebooks}-codebook delay "
            f"pattern, got {max_new_tokens}"
        )
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError(
            "num_return_sequences must be 1 (MusicGen joins the samples along time); repeat the prompts instead"
        )
    if "max_length" in generate_kwargs:
        raise ValueError("pass max_new_tokens, not max_length")
    transformers = require("transformers")
    device = model.device
    inputs = transformers_text_inputs(processor, prompts, device=device)
    capture = _capture_criterion(transformers)
    criteria = transformers.StoppingCriteriaList([*generate_kwargs.pop("stopping_criteria", []), capture])
    with seeded(seed, device):
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, stopping_criteria=criteria, **generate_kwargs
        )
    audio = out if isinstance(out, torch.Tensor) else out.sequences
    if capture.sequence is None:  # pragma: no cover - generate always runs at least one step
        raise RuntimeError("generation produced no decoder steps")
    sequence = capture.sequence
    batch = len(prompts)
    pattern, bos = _delay_mask(model, batch, sequence.shape[-1], sequence.device)
    sequence = model.decoder.apply_delay_pattern_mask(sequence, pattern)
    codes = sequence[pattern == -1].reshape(batch, num_codebooks, -1)
    return audio, codes


def text_token_limit(tokenizer: Any) -> int | None:
    """The most tokens a MusicGen text tokenizer keeps (``model_max_length``: 512 for T5), or None when it
    sets no real limit (transformers' placeholder is about 1e30)."""
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def transformers_text_inputs(
    processor: Any, prompts: Sequence[str], device: str | torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Tokenize prompts for MusicGen: ``{"input_ids": [B, L], "attention_mask": [B, L]}`` on ``device``.

    A prompt longer than the tokenizer's limit (:func:`text_token_limit`) keeps its first tokens
    (the tokenizer's own truncation: the end-of-text token stays last)."""
    prompts = check_prompt_list(prompts)
    limit = text_token_limit(processor.tokenizer)  # longer prompts: their first `limit` tokens, as T5 reads
    enc = processor(
        text=prompts, padding=True, truncation=limit is not None, max_length=limit, return_tensors="pt"
    )
    return {k: enc[k].to(device) if device is not None else enc[k] for k in ("input_ids", "attention_mask")}


def transformers_code_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    codes: torch.Tensor,
    *,
    keep_only_valid_steps: bool = False,
    guidance_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits of codes under a transformers ``MusicgenForConditionalGeneration``.

    The codes are laid out with the decoder's own ``build_delay_pattern_mask`` (BOS at step 0,
    codebook ``k`` at steps ``k+1 .. k+S``, pad elsewhere), exactly the decoder input ``generate``
    builds, and one forward pass scores every position.

    Args:
        model: ``MusicgenForConditionalGeneration`` (or a peft wrapper of it).
        input_ids: ``[B, L]`` text token ids (see :func:`transformers_text_inputs`).
        attention_mask: ``[B, L]`` text mask, or None.
        codes: ``[B, K, S]`` code ids in ``[0, vocab_size)``; ``S >= K - 1``.
        keep_only_valid_steps: mask the last ``delay_k`` frames of each codebook (see module doc).
        guidance_scale: ``> 1``: the guided logits ``generate(guidance_scale=...)`` samples from; the
            unconditional half is what ``generate`` appends (zero text states, zero text mask).

    Returns:
        ``(logits [B, K, S, V], mask [B, K, S] bool)``: the logits that predicted each code (frame
        layout), in the model's dtype, differentiable; ``mask`` marks the codes that count.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.decoder
    num_codebooks = decoder.num_codebooks
    codes = check_codes(codes, num_codebooks, decoder.config.vocab_size)
    batch, _, steps = codes.shape
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != batch:
        raise ValueError(
            f"input_ids must be a [B, L] tensor with B={batch} (the batch of codes), "
            f"got {getattr(input_ids, 'shape', type(input_ids).__name__)}"
        )
    if attention_mask is not None and (
        not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape
    ):
        raise ValueError(
            f"attention_mask must be None or match input_ids {tuple(input_ids.shape)}, "
            f"got {getattr(attention_mask, 'shape', type(attention_mask).__name__)}"
        )
    channel_codebooks = num_codebooks // 2 if decoder.config.audio_channels == 2 else num_codebooks
    length = steps + channel_codebooks  # BOS + S frames + (K - 1) delay steps
    if length < 2 * channel_codebooks - 1:
        raise ValueError(f"codes must have at least {channel_codebooks - 1} frames (dim 2), got {steps}")
    device = codes.device
    pattern, bos = _delay_mask(base, batch, length, device)  # [B*K, L], -1 where a code goes
    slots = pattern == -1
    if not bool((slots.sum(-1) == steps).all()):  # pragma: no cover - guards the pattern convention
        raise RuntimeError("unexpected delay pattern: slots per codebook differ from the number of frames")
    delayed = pattern.clone()
    delayed[slots] = codes.reshape(-1)
    mask = None if attention_mask is None else attention_mask.to(device)
    logits = _transformers_logits(model, input_ids.to(device), mask, delayed[:, :-1], guidance_scale)
    logits = logits.reshape(batch, num_codebooks, length - 1, -1)  # predicts positions 1 .. L-1
    target_slots = slots[:, 1:].reshape(batch, num_codebooks, length - 1)
    vocab = logits.shape[-1]
    frame_logits = logits[target_slots].reshape(batch, num_codebooks, steps, vocab)
    if keep_only_valid_steps:
        delays = slots.reshape(batch, num_codebooks, length)[0].float().argmax(-1) - 1  # first slot is k + 1
        mask = valid_steps_mask(delays, steps)[None].expand(batch, -1, -1)
    else:
        mask = torch.ones(batch, num_codebooks, steps, dtype=torch.bool, device=device)
    return frame_logits, mask


def _transformers_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    decoder_input_ids: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Decoder logits ``[B*K, L, V]``; with guidance, one pass over the conditional and unconditional
    batch as ``generate`` lays it out (``_prepare_text_encoder_kwargs_for_generation``: the text states
    and mask followed by zeros; the decoder inputs repeated), combined with :func:`guided_logits`."""
    if check_guidance_scale(guidance_scale) == 1:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            return_dict=True,
        )
        return out.logits
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    states = base.text_encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    states = states.last_hidden_state
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.zeros_like(attention_mask)])
    out = model(
        encoder_outputs=(torch.cat([states, torch.zeros_like(states)]),),
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids.repeat(2, 1),
        return_dict=True,
    )
    cond, uncond = out.logits.chunk(2)
    return guided_logits(cond, uncond, guidance_scale)


def transformers_sequence_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    codes: torch.Tensor,
    *,
    keep_only_valid_steps: bool = False,
) -> SequenceLogProbs:
    """Teacher-forced log-probabilities of codes under a transformers ``MusicgenForConditionalGeneration``.

    Arguments as :func:`transformers_code_logits`. Returns :class:`SequenceLogProbs` ``(logps [B],
    token_logps [B, K, S], mask [B, K, S])``, in the logits' dtype (float32 for half-precision models).
    Differentiable.
    """
    logits, mask = transformers_code_logits(
        model, input_ids, attention_mask, codes, keep_only_valid_steps=keep_only_valid_steps
    )
    return gather_logprobs(logits, codes.long(), mask)
