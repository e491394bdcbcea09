"""Input checks shared by the public entry points.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the input and
what was expected, so callers never see a shape error from deep inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000


def check_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an int in [8 kHz, 192 kHz] or raise."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise TypeError(f"{name} must be an int in Hz, got {type(sample_rate).__name__}")
    if float(sample_rate) != int(sample_rate):
        raise ValueError(f"{name} must be a whole number of Hz, got {sample_rate}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{name} must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {rate}")
    return rate


def check_prompts(prompts: object, count: int | None = None, name: str = "prompts") -> list[str]:
    """Return ``prompts`` as a list of non-empty strings, optionally of length ``count``."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(prompts).__name__}")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(p).__name__}")
        if not p.strip():
            raise ValueError(f"{name}[{i}] is empty; every clip needs a non-empty text prompt")
        out.append(p)
    if count is not None and len(out) != count:
        raise ValueError(f"got {count} audio clips but {len(out)} {name}; pass one prompt per clip")
    return out


def check_finite(audio: torch.Tensor, name: str = "audio") -> None:
    """Raise ValueError if ``audio`` holds NaN or Inf."""
    if not torch.isfinite(audio).all():
        bad = (~torch.isfinite(audio)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or Inf samples (first at index {bad}); expected finite floats")
