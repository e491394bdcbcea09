"""Sequence log-probabilities and seeded generation with codes for AudioCraft's ``MusicGen``; the
delay-pattern conventions are in :mod:`..logprobs`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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
)

# -------------------------------------------------------------------------------------- audiocraft


def audiocraft_conditions(
    prompts: Sequence[str], device: str | torch.device = "cpu", sample_rate: int = 32000
) -> list[Any]:
    """``ConditioningAttributes`` for text prompts, built as ``MusicGen.generate`` builds them.

    Each has ``text={"description": prompt}`` and an empty ``self_wav`` at ``sample_rate`` (used by
    melody models only, ignored by text-only ones).
    """
    prompts = check_prompt_list(prompts)
    cond = require("audiocraft.modules.conditioners")
    attributes = []
    for prompt in prompts:
        attr = cond.ConditioningAttributes(text={"description": prompt})
        attr.wav["self_wav"] = cond.WavCondition(
            torch.zeros((1, 1, 1), device=device),
            torch.tensor([0], device=device),
            sample_rate=[sample_rate],
            path=[None],
        )
        attributes.append(attr)
    return attributes


_GEN_PARAM_ALIASES = {"temperature": "temp"}
_GEN_PARAMS = ("use_sampling", "temp", "top_k", "top_p", "cfg_coef", "two_step_cfg")


def audiocraft_generation_params(sampling: dict) -> dict:
    """AudioCraft sampling options (``temperature`` accepted for ``temp``) -> generation-param overrides;
    ValueError naming any unknown option."""
    overrides = {_GEN_PARAM_ALIASES.get(k, k): v for k, v in sampling.items()}
    unknown = sorted(set(overrides) - set(_GEN_PARAMS))
    if unknown:
        raise ValueError(f"unknown generation_params {unknown}; expected some of {list(_GEN_PARAMS)}")
    return overrides


def audiocraft_generate_with_codes(
    musicgen: Any,
    prompts: Sequence[str],
    duration: float | None = None,
    seed: int | None = None,
    **generation_params: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate with an AudioCraft ``MusicGen`` and return ``(audio [B, C, T], codes [B, K, S])``.

    Uses ``musicgen.generate(prompts, return_tokens=True)``. The model's generation parameters are
    honoured; ``duration`` (seconds) and ``generation_params`` (``use_sampling``, ``temp`` or
    ``temperature``, ``top_k``, ``top_p``, ``cfg_coef``, ``two_step_cfg``) override them for this call
    only (the model's settings are restored after). ``S = int(duration * frame_rate)``.
    ``seed`` seeds torch's RNG for the call and restores the caller's RNG state after.
    """
    prompts = check_prompt_list(prompts)
    overrides = audiocraft_generation_params(generation_params)
    if duration is not None and (
        not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration <= 0
    ):
        raise ValueError(f"duration must be a positive number of seconds or None, got {duration!r}")
    saved_duration, saved_params = musicgen.duration, dict(musicgen.generation_params)
    try:
        if duration is not None:
            musicgen.duration = float(duration)
        musicgen.generation_params.update(overrides)
        device = next(iter(musicgen.lm.parameters())).device
        with seeded(seed, device):
            audio, codes = musicgen.generate(prompts, progress=False, return_tokens=True)
    finally:
        musicgen.duration, musicgen.generation_params = saved_duration, saved_params
    return audio, codes


def audiocraft_code_logits(
    lm: Any,
    codes: torch.Tensor,
    conditions: Sequence[str] | Sequence[Any],
    *,
    keep_only_valid_steps: bool = False,
    guidance_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits of codes under an AudioCraft ``LMModel``.

    Uses ``lm.compute_predictions(codes, [], condition_tensors)`` (the LM's own pattern provider
    lays out the delay pattern). The condition tensors are computed from ``conditions`` directly,
    bypassing the LM's classifier-free-guidance and attribute dropout (which would randomly drop the
    text in training mode).

    Args:
        lm: ``audiocraft.models.lm.LMModel`` (``musicgen.lm``), or a wrapper exposing
            ``compute_predictions`` and ``condition_provider``.
        codes: ``[B, K, S]`` code ids in ``[0, card)``.
        conditions: ``B`` prompts (strings) or ``ConditioningAttributes`` (see :func:`audiocraft_conditions`).
        keep_only_valid_steps: AudioCraft's training convention; masks the last ``delay_k`` frames of
            codebook ``k`` (see module doc).
        guidance_scale: ``!= 1``: the guided logits ``generate(cfg_coef=...)`` samples from; the
            unconditional half has the conditions dropped as ``LMModel.generate`` drops them
            (``ClassifierFreeGuidanceDropout(p=1)``), tokenized in one batch with the conditional half.

    Returns:
        ``(logits [B, K, S, card], mask [B, K, S] bool)``, differentiable.
    """
    codes = check_codes(codes, lm.num_codebooks, lm.card)
    if isinstance(conditions, str) or not isinstance(conditions, Sequence):
        raise TypeError(
            f"conditions must be a list of prompts or ConditioningAttributes, got {type(conditions).__name__}"
        )
    if len(conditions) != codes.shape[0]:
        raise ValueError(
            f"conditions must have one entry per sequence: got {len(conditions)} for B={codes.shape[0]}"
        )
    device = codes.device
    if all(isinstance(c, str) for c in conditions):
        conditions = audiocraft_conditions(list(conditions), device=device)
    provider = lm.condition_provider
    conditions = list(conditions)
    if check_guidance_scale(guidance_scale) == 1:
        condition_tensors = provider(provider.tokenize(conditions))
        out = lm.compute_predictions(
            codes, [], condition_tensors, keep_only_valid_steps=keep_only_valid_steps
        )
        return out.logits, out.mask.to(torch.bool)
    dropout = require("audiocraft.modules.conditioners").ClassifierFreeGuidanceDropout(p=1.0)
    condition_tensors = provider(provider.tokenize(conditions + dropout(conditions)))
    out = lm.compute_predictions(
        torch.cat([codes, codes]), [], condition_tensors, keep_only_valid_steps=keep_only_valid_steps
    )
    cond, uncond = out.logits.chunk(2)
    return guided_logits(cond, uncond, guidance_scale), out.mask[: codes.shape[0]].to(torch.bool)


@contextlib.contextmanager
def audiocraft_unguided_generation(lm: Any) -> Iterator[None]:
    """Within the block ``lm.generate`` samples from the conditional model alone.

    AudioCraft 1.3's ``LMModel.generate`` appends the unconditional conditions to the batch whenever
    there are conditions, so at ``cfg_coef=1`` every step still runs the decoder on twice the batch for
    ``uncond + (cond - uncond) * 1``. Here ``generate`` gets no conditions (so it builds no
    unconditional half) and each step runs the LM once on the conditional tensors, then samples as
    ``LMModel._sample_next_token`` does (softmax at ``temp``, then top-p, top-k or plain multinomial).
    Use it only for ``cfg_coef == 1``."""
    utils = require("audiocraft.utils.utils")
    generate = lm.generate

    def unguided_generate(
        prompt: Any = None, conditions: Any = (), num_samples: Any = None, **kw: Any
    ) -> Any:
        if not conditions:
            return generate(prompt, list(conditions), num_samples, **kw)
        provider = lm.condition_provider
        tensors = provider(provider.tokenize(list(conditions)))
        fsdp = getattr(lm, "_fsdp", None)
        model = lm if fsdp is None else fsdp

        def next_token(sequence: torch.Tensor, cfg_conditions: Any, unconditional_state: Any,
                       use_sampling: bool = False, temp: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                       **_: Any) -> torch.Tensor:  # fmt: skip
            logits = model(sequence, conditions=[], condition_tensors=tensors)  # [B, K, S, card]
            logits = logits.permute(0, 1, 3, 2)[..., -1]  # [B, K, card]
            if not (use_sampling and temp > 0.0):
                return torch.argmax(logits, dim=-1, keepdim=True)
            probs = torch.softmax(logits / temp, dim=-1)
            if top_p > 0.0:
                return utils.sample_top_p(probs, p=top_p)
            if top_k > 0:
                return utils.sample_top_k(probs, k=top_k)
            return utils.multinomial(probs, num_samples=1)

        lm._sample_next_token = next_token
        try:
            return generate(prompt, [], len(conditions), **kw)
        finally:
            del lm._sample_next_token

    lm.generate = unguided_generate
    try:
        yield
    finally:
        del lm.generate


def audiocraft_sequence_logprobs(
    lm: Any,
    codes: torch.Tensor,
    conditions: Sequence[str] | Sequence[Any],
    *,
    keep_only_valid_steps: bool = False,
) -> SequenceLogProbs:
    """Teacher-forced log-probabilities of codes under an AudioCraft ``LMModel``.

    Arguments as :func:`audiocraft_code_logits`. Returns :class:`SequenceLogProbs` ``(logps [B],
    token_logps [B, K, S], mask [B, K, S])``. Differentiable.
    """
    logits, mask = audiocraft_code_logits(lm, codes, conditions, keep_only_valid_steps=keep_only_valid_steps)
    return gather_logprobs(logits, codes.long(), mask)
