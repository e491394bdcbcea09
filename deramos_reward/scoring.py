"""``score()``: files or arrays + prompts -> rows of MI/TA, the plain scorer API."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .frontend import to_clips
from .model import DeRAMOS
from .prompt_cache import PromptCache
from .validation import check_positive_int, check_prompts


def score(
    model: DeRAMOS,
    audio: object,
    texts: str | Sequence[str],
    sample_rate: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    prompt_cache: PromptCache | None = None,
) -> list[dict[str, float]]:
    """Score clips; returns one ``{"mi": float, "ta": float}`` per clip, in input order.

    Args:
        audio: a list of file paths or arrays/tensors ([T] or channels-first [C, T]), or one
            batched tensor [B, T] / [B, C, T]. Any rate in 8-192 kHz, any channel count.
        texts: one prompt per clip (a single string is allowed for a single clip).
        sample_rate: rate of array inputs; files carry their own.
        batch_size: clips per forward pass.
    """
    if not isinstance(model, DeRAMOS):
        raise TypeError(f"model must be a deramos_reward.DeRAMOS, got {type(model).__name__}")
    batch_size = check_positive_int(batch_size, "batch_size")
    clips = to_clips(audio, sample_rate, model.sample_rate)
    prompts = check_prompts(texts, len(clips.waves), name="texts")
    return score_clips(model, clips.waves, prompts, batch_size, progress, prompt_cache)


def score_clips(
    model: DeRAMOS,
    waves: Sequence[torch.Tensor],
    prompts: Sequence[str],
    batch_size: int = 16,
    progress: bool = False,
    prompt_cache: PromptCache | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> list[dict[str, float]]:
    """Mono clips already at ``model.sample_rate`` (each [T_i]) + prompts -> rows, in input order.

    ``on_progress(seconds)``: called as parts of the clips are scored (windows of long clips too);
    the calls add up to the clips' total duration.
    """
    cache = PromptCache(model.text_encoder) if prompt_cache is None else prompt_cache
    # Clips of equal length share encoder passes, so batch them together; restore order after.
    order = sorted(range(len(prompts)), key=lambda i: waves[i].shape[0])
    rows: list[dict[str, float] | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(order), batch_size), disable=not progress, desc="scoring", unit="batch"
            ):
                idx = order[start : start + batch_size]
                text = cache.get([prompts[i] for i in idx], model.device)
                # Clips stay where they are: the model stacks each group of windows and moves it to
                # its device in one copy (no per-clip copies or per-clip device syncs).
                done = None if on_progress is None else (lambda n: on_progress(n / model.sample_rate))
                out = model.forward_clips([waves[i] for i in idx], text, on_progress=done)
                for i, mi, ta in zip(idx, out.mi.tolist(), out.ta.tolist()):  # one transfer per field
                    rows[i] = {"mi": mi, "ta": ta}
    finally:
        model.train(was_training)
    return rows  # type: ignore[return-value]
