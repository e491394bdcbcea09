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

__all__ = [
    "SequenceLogProbs",
    "check_codes",
    "check_prompt_list",
    "gather_logprobs",
    "guided_logits",
    "masked_log_softmax",
    "check_guidance_scale",
    "seeded",
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


def valid_steps_mask(delays: torch.Tensor, steps: int) -> torch.Tensor:
    """``[K, S]`` True where frame ``t`` of codebook ``k`` is predicted before codebook 0 ended."""
    frames = torch.arange(steps, device=delays.device)
    return frames[None, :] < (steps - delays[:, None])
