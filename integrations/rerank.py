"""Best-of-N and progressive best-of-N with MusicGen, for both libraries through one backend.

``best_of_n(model, prompts, n, reward, ...)`` takes a :class:`~deramos_reward.integrations.musicgen.base.MusicGenBackend` or a model
(turned into one with ``processor``); one argument order and one ``**sampling`` for both libraries.
Sampling options keep the library's own names (transformers: ``do_sample``, ``guidance_scale``,
``top_k``...; AudioCraft: ``use_sampling``, ``temp``/``temperature``, ``top_k``, ``cfg_coef``...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from deramos_reward.integrations.musicgen.base import MusicGenBackend
from deramos_reward.integrations.musicgen.factory import musicgen_backend
from deramos_reward.progressive import progressive_best_of_n as progressive_rerank
from deramos_reward.progressive import stage_frames
from deramos_reward.rerank import BestOfNResult
from deramos_reward.rerank import best_of_n as rerank


def candidate_frames(backend: MusicGenBackend, duration: float | None) -> int:
    """Frames per candidate: from ``duration`` (seconds), else the model's own generation length."""
    return backend.default_frames() if duration is None else backend.frames_for(duration)


def segment_generator(backend: MusicGenBackend, **sampling: Any):
    """``generate_segment(prompts, prefix, frames) -> (audio [B, C, T], codes [B, K, frames])`` for
    :func:`deramos_reward.progressive.progressive_best_of_n`: continues ``prefix`` codes ``[B, K, S0]``
    (None: from scratch) from the codes themselves, so a continued candidate keeps the prefix that
    was scored."""

    def generate_segment(prompts: list[str], prefix: torch.Tensor | None, frames: int):
        return backend.generate(prompts, frames, prefix=prefix, **sampling)

    return generate_segment


def best_of_n(
    model: Any,
    prompts: str | Sequence[str],
    n: int,
    reward: Callable,
    *,
    processor: Any = None,
    duration: float | None = None,
    max_batch: int = 16,
    seed: int | None = None,
    return_candidates: bool = False,
    progress: bool = False,
    **sampling: Any,
) -> BestOfNResult:
    """Best-of-N with a MusicGen: ``n`` candidates per prompt, keep the best by ``reward``.

    Args:
        model: a backend, or a MusicGen of either library (see :func:`~deramos_reward.integrations.musicgen.factory.musicgen_backend`).
        prompts, n, reward, max_batch, seed, return_candidates, progress: as
            :func:`deramos_reward.best_of_n` (prompts are repeated in the batch, at most ``max_batch``
            per ``generate`` call).
        processor: the transformers model's ``MusicgenProcessor``.
        duration: seconds per candidate; None uses the model's own generation length.
        **sampling: the library's sampling options, for this call only.

    Returns:
        :class:`deramos_reward.BestOfNResult`: ``audio`` [P, C, T], ``scores`` [P, n], ``index`` [P],
        ``codes`` [P, K, S] of the chosen candidates (``candidate_codes`` [P, n, K, S] with
        ``return_candidates``).
    """
    backend = musicgen_backend(model, processor)
    frames = candidate_frames(backend, duration)
    options = dict(max_batch=max_batch, seed=seed, return_candidates=return_candidates, progress=progress)
    generate = lambda batch: backend.generate(batch, frames, **sampling)  # noqa: E731
    return rerank(generate, prompts, n, reward, backend.sample_rate, **options)


def progressive_best_of_n(
    model: Any,
    prompts: str | Sequence[str],
    n: int,
    reward: Callable,
    *,
    processor: Any = None,
    duration: float | None = None,
    checkpoints: Sequence[float] = (0.25, 0.5),
    keep: float = 0.5,
    max_batch: int = 16,
    seed: int | None = None,
    return_candidates: bool = False,
    progress: bool = False,
    **sampling: Any,
) -> BestOfNResult:
    """Progressive best-of-N with a MusicGen (see :mod:`deramos_reward.progressive`).

    All ``n`` candidates are generated to the first checkpoint (a fraction of the duration), the best
    ``keep`` fraction of each prompt's candidates continues from its own codes to the next, and so on.
    Arguments as :func:`best_of_n`; every segment between checkpoints must add at least
    ``backend.min_frames`` frames (the delay pattern's span: 4 frames for transformers MusicGen).
    ``result.stats`` counts the generated frames against plain best-of-N.
    """
    backend = musicgen_backend(model, processor)
    total = candidate_frames(backend, duration)
    stages = stage_frames(total, checkpoints)
    shortest = min(b - a for a, b in zip([0, *stages], stages))
    if shortest < backend.min_frames:
        raise ValueError(
            f"checkpoints {tuple(checkpoints)} cut {total} frames into segments {stages}; each segment "
            f"must add at least {backend.min_frames} frames (num_codebooks) for MusicGen's delay pattern"
        )
    options = dict(max_batch=max_batch, seed=seed, return_candidates=return_candidates, progress=progress)
    generate_segment = segment_generator(backend, **sampling)
    return progressive_rerank(
        generate_segment,
        prompts,
        n,
        reward,
        backend.sample_rate,
        total,
        checkpoints=checkpoints,
        keep=keep,
        **options,
    )
