"""Sequence log-probabilities of MusicGen codes under the codebook delay pattern.

MusicGen predicts ``K`` parallel codebooks with a delay pattern: codebook ``k`` is shifted ``k`` steps
to the right, so the code of codebook ``k`` at frame ``t`` is predicted at sequence step
``t + k + 1`` (step 0 is BOS / the empty step) with codebooks ``< k`` of later frames in context.
The functions here take codes in frame layout ``[B, K, S]`` (what generation returns), lay them out
with the library's own delay pattern, run one teacher-forced forward pass and gather the
log-probability of every code, returned in frame layout again:

- ``logps`` ``[B]``: sum of the valid token log-probabilities of each sequence;
- ``token_logps`` ``[B, K, S]``: log-probability of each code given everything generated before it
  (0 where ``mask`` is False);
- ``mask`` ``[B, K, S]`` bool: which codes count.

With ``keep_only_valid_steps=False`` (default) every code counts: the context each code sees is
exactly the one it had during generation (delay-pattern padding included), so ``logps`` is the
log-probability of the sample under the model's conditional distribution, the quantity DPO needs.
With ``keep_only_valid_steps=True`` the last ``k`` frames of codebook ``k`` are masked (those
predicted after codebook 0 has ended, AudioCraft's training convention), leaving
``K * S - sum(delays)`` = ``K * S - K * (K - 1) / 2`` codes.

Log-probabilities are of the conditional model itself unless ``guidance_scale`` is given: then the
logits are those classifier-free guidance samples from, ``uncond + guidance_scale * (cond - uncond)``
(:func:`guided_logits`), the unconditional pass built as each library's ``generate`` builds it, both
passes in one batch with gradient through both. ``guidance_scale=1`` runs the conditional pass only.
Temperature and top-k/top-p are sampling-time transforms and are not applied. Nothing here runs under ``no_grad``:
gradients reach the model's parameters. Dropout follows the module's train/eval mode (call
``model.eval()`` for deterministic values); AudioCraft's condition dropout is never applied.

``generate_with_codes`` (transformers) and ``audiocraft_generate_with_codes`` return the audio and
the codes of one seeded generation call; ``generate`` of both libraries runs under ``no_grad``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch

from deramos_reward._optional import require

__all__ = [
    "SequenceLogProbs",
    "check_codes",
    "check_prompt_list",
    "gather_logprobs",
    "guided_logits",
    "masked_log_softmax",
    "check_guidance_scale",
    "seeded",
    "generate_with_codes",
    "transformers_code_logits",
    "audiocraft_code_logits",
    "transformers_sequence_logprobs",
    "transformers_text_inputs",
    "audiocraft_conditions",
    "audiocraft_generation_params",
    "audiocraft_generate_with_codes",
    "audiocraft_sequence_logprobs",
    "audiocraft_unguided_generation",
]


class SequenceLogProbs(NamedTuple):
    """Log-probabilities of code sequences; unpacks as ``logps, token_logps, mask``.

    Attributes:
        logps: ``[B]`` sum of ``token_logps`` over valid positions.
        token_logps: ``[B, K, S]`` per-code log-probabilities, 0 where ``mask`` is False.
        mask: ``[B, K, S]`` bool, True for codes that count.
    """

    logps: torch.Tensor
    token_logps: torch.Tensor
    mask: torch.Tensor


# ----------------------------------------------------------------------------------------- helpers


def check_prompt_list(prompts: Sequence[str], name: str = "prompts") -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError(f"{name} must not be empty")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"{name} must contain only strings, got {sorted(set(bad))}")
    return list(prompts)


def check_codes(
    codes: Any, num_codebooks: int | None = None, card: int | None = None, name: str = "codes"
) -> torch.Tensor:
    """``codes`` as an int64 ``[B, K, S]`` tensor, or TypeError/ValueError naming ``name``: not empty,
    with ``num_codebooks`` codebooks and ids in ``[0, card)`` when those are given."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, K, S], got {type(codes).__name__}")
    if codes.dim() != 3:
        raise ValueError(f"{name} must have shape [B, K, S], got {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {codes.dtype}")
    if num_codebooks is not None and codes.shape[1] != num_codebooks:
        raise ValueError(
            f"{name} must have K={num_codebooks} codebooks (dim 1), got shape {tuple(codes.shape)}"
        )
    if codes.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(codes.shape)}")
    if card is not None and (int(codes.min()) < 0 or int(codes.max()) >= card):
        raise ValueError(
            f"{name} must hold code ids in [0, {card}), got values in [{int(codes.min())}, {int(codes.max())}]"
        )
    return codes.long()


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block (CPU and ``device``), restoring the caller's RNG state after."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last dim of logits ``[..., V]`` where ``mask [...]`` holds, uniform elsewhere
    (masked positions may hold nan logits, as AudioCraft's do); half precision is promoted to float32."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = torch.where(mask[..., None], logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    return torch.log_softmax(logits, dim=-1)


def gather_logprobs(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> SequenceLogProbs:
    """logits ``[B, K, S, V]``, codes/mask ``[B, K, S]`` -> :class:`SequenceLogProbs` (log-softmax, gather,
    zero where ``mask`` is False; half-precision logits are promoted to float32)."""
    token_logps = masked_log_softmax(logits, mask).gather(-1, codes[..., None]).squeeze(-1)
    token_logps = torch.where(
        mask, token_logps, torch.zeros((), dtype=token_logps.dtype, device=token_logps.device)
    )
    return SequenceLogProbs(token_logps.sum(dim=(1, 2)), token_logps, mask)


def check_guidance_scale(guidance_scale: float, name: str = "guidance_scale") -> float:
    """``guidance_scale`` as a float >= 1 (1 = no guidance), or ValueError naming ``name``.

    Values in (0, 1) are refused: transformers' MusicGen ignores them (guidance runs only above 1)
    while AudioCraft applies them, so they would mean different policies in the two libraries."""
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, (int, float))
        or not guidance_scale >= 1
        or guidance_scale == float("inf")
    ):
        raise ValueError(
            f"{name} must be a number >= 1 (1 = no classifier-free guidance), got {guidance_scale!r}"
        )
    return float(guidance_scale)


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance as both libraries sample with it: ``uncond + s * (cond - uncond)``.

    ``cond``/``uncond``: logits of any shape (``[..., card]``), with or without gradient; half precision
    is promoted to float32 first (the difference is scaled up; transformers' ``generate`` combines in
    float32 too)."""
    if cond.dtype in (torch.float16, torch.bfloat16):
        cond, uncond = cond.float(), uncond.float()
    return uncond + (cond - uncond) * guidance_scale


def _valid_steps_mask(delays: torch.Tensor, steps: int) -> torch.Tensor:
    """``[K, S]`` True where frame ``t`` of codebook ``k`` is predicted before codebook 0 ended."""
    frames = torch.arange(steps, device=delays.device)
    return frames[None, :] < (steps - delays[:, None])


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
        mask = _valid_steps_mask(delays, steps)[None].expand(batch, -1, -1)
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
