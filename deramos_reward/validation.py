"""Input checks shared by the public entry points.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the input and
what was expected, so callers never see a shape error from deep inside torch.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .errors import AudioInputWarning, InputError, InputTypeError

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
# Largest |sample| accepted in float audio (full scale is 1.0; see check_finite).
MAX_ABS_SAMPLE = 1e4
# Float audio peaking above this (+6 dB over full scale) is scored with an AudioInputWarning: it is
# most likely integer PCM stored as float.
LOUD_SAMPLE = 2.0


def check_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an int in [8 kHz, 192 kHz] or raise (numpy ints are accepted)."""
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, numbers.Real):
        raise InputTypeError(f"{name} must be an int in Hz, got {type(sample_rate).__name__}")
    if not math.isfinite(float(sample_rate)) or float(sample_rate) != int(sample_rate):
        raise InputError(f"{name} must be a whole number of Hz, got {sample_rate}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"{name} must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {rate}")
    return rate


def check_prompts(prompts: object, count: int | None = None, name: str = "prompts") -> list[str]:
    """Return ``prompts`` as a list of non-empty strings, optionally of length ``count``."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence):
        raise InputTypeError(f"{name} must be a string or a list of strings, got {type(prompts).__name__}")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputTypeError(f"{name}[{i}] must be a string, got {type(p).__name__}")
        if not p.strip():
            raise InputError(f"{name}[{i}] is empty; every clip needs a non-empty text prompt")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates, e.g. from a bad decode upstream
            raise InputError(f"{name}[{i}] is not valid Unicode text ({err.reason} at {err.start})") from err
        out.append(p)
    if count is not None and len(out) != count:
        raise InputError(f"got {count} audio clips but {len(out)} {name}; pass one prompt per clip")
    return out


def check_finite(audio: torch.Tensor, name: str = "audio") -> float:
    """Raise InputError if ``audio`` holds NaN or Inf, or samples louder than ``MAX_ABS_SAMPLE``.

    The bound keeps the power spectrogram finite (it overflows float32 near 1e16): a float array
    holding PCM-scale values (e.g. int16 samples stored as floats) is reported, not scored as NaN.

    Returns:
        the peak ``|sample|`` (for ``warn_if_loud``).
    """
    if not torch.isfinite(audio).all():
        bad = (~torch.isfinite(audio)).nonzero()[0].tolist()
        raise InputError(f"{name} contains NaN or Inf samples (first at index {bad}); expected finite floats")
    peak = float(audio.detach().abs().max()) if audio.numel() else 0.0
    if peak > MAX_ABS_SAMPLE:
        raise InputError(
            f"{name} has samples up to {peak:.4g}; expected float audio in about [-1, 1] "
            f"(at most {MAX_ABS_SAMPLE:g}). Pass integer PCM with its integer dtype (it is scaled "
            "automatically) or divide float samples by the full-scale value"
        )
    return peak


def warn_if_loud(peak: float, name: str = "audio") -> None:
    """An ``AudioInputWarning`` naming ``name`` when float audio peaks beyond ``LOUD_SAMPLE`` (2.0).

    Such audio is scored as it is, but it is most likely integer PCM stored as float. Called where
    user audio enters (the front-end, ``DeRAMOS.forward``), once per input.
    """
    if peak > LOUD_SAMPLE:
        warnings.warn(
            f"{name} has float samples beyond +-{LOUD_SAMPLE:g} (full scale is 1.0): if it "
            "holds integer PCM stored as float (e.g. int16 values), divide by the full-scale value (32768 "
            "for 16-bit) or pass the integer array; scored as it is",
            AudioInputWarning,
            stacklevel=3,
        )


def check_file(path: object, what: str, missing: type[Exception] = InputError) -> str:
    """``path`` as a string when it names an existing file; else an error saying what is wrong.

    A folder is reported as a folder (not as missing); ``missing`` is the class raised for a path
    that does not exist (an ``InputError`` subclass, possibly also a ``FileNotFoundError``).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"{what} must be a file path, got {type(path).__name__}")
    name = os.fspath(path)
    if os.path.isfile(name):
        return name
    if os.path.isdir(name):
        raise InputError(f"{what} {name!r} is a folder; expected a file")
    raise missing(f"{what} {name!r} does not exist")
