"""Input checks shared by the public entry points.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the input and
what was expected, so callers never see a shape error from deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
# Largest |sample| accepted in float audio (full scale is 1.0; see check_finite).
MAX_ABS_SAMPLE = 1e4


def check_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an int in [8 kHz, 192 kHz] or raise (numpy ints are accepted)."""
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, numbers.Real):
        raise TypeError(f"{name} must be an int in Hz, got {type(sample_rate).__name__}")
    if not math.isfinite(float(sample_rate)) or float(sample_rate) != int(sample_rate):
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
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates, e.g. from a bad decode upstream
            raise ValueError(f"{name}[{i}] is not valid Unicode text ({err.reason} at {err.start})") from err
        out.append(p)
    if count is not None and len(out) != count:
        raise ValueError(f"got {count} audio clips but {len(out)} {name}; pass one prompt per clip")
    return out


def check_finite(audio: torch.Tensor, name: str = "audio") -> None:
    """Raise ValueError if ``audio`` holds NaN or Inf, or samples louder than ``MAX_ABS_SAMPLE``.

    The bound keeps the power spectrogram finite (it overflows float32 near 1e16): a float array
    holding PCM-scale values (e.g. int16 samples stored as floats) is reported, not scored as NaN.
    """
    if not torch.isfinite(audio).all():
        bad = (~torch.isfinite(audio)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or Inf samples (first at index {bad}); expected finite floats")
    peak = float(audio.detach().abs().max()) if audio.numel() else 0.0
    if peak > MAX_ABS_SAMPLE:
        raise ValueError(
            f"{name} has samples up to {peak:.4g}; expected float audio in about [-1, 1] "
            f"(at most {MAX_ABS_SAMPLE:g}). Pass integer PCM with its integer dtype (it is scaled "
            "automatically) or divide float samples by the full-scale value"
        )
