"""Input checks shared by the public entry points.

Every check raises ``InputError`` (a ``ValueError``) or ``InputTypeError`` (also a ``TypeError``)
with a message that names the input and what was expected, so callers never see a shape error from
deep inside torch, and the ``deramos`` command reports them as one line.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

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
    user audio enters (the front-end and the rated-clip reader), once per input.
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


def check_clips(waves: Sequence[object]) -> None:
    """``waves`` must be a non-empty list of non-empty, finite 1-D tensors (mono clips)."""
    if len(waves) == 0:
        raise InputError("audio holds no clips")
    for i, w in enumerate(waves):
        if not isinstance(w, torch.Tensor) or w.dim() != 1:
            raise InputError(
                f"audio[{i}] must be a 1-D tensor of samples, got {getattr(w, 'shape', type(w))}"
            )
        if w.shape[0] == 0:
            raise InputError(f"audio[{i}] is empty (0 samples)")
        check_finite(w, f"audio[{i}]")


# ---- argument checks --------------------------------------------------------------------------
# Each returns the value as a plain Python bool/int/float and raises InputTypeError for a value of
# the wrong type (a bool is never a number here) or InputError for one out of range, with the same
# message either way: "{name} must be <what>, got {value!r}". With ``optional=True`` None passes
# (and is returned) and the message says "<what> or None".


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check(
    value: object,
    name: str,
    what: str,
    is_type: Callable[[object], bool],
    in_range: Callable[[Any], bool],
    convert: Callable[[Any], Any],
    optional: bool,
) -> Any:
    if optional and value is None:
        return None
    if not is_type(value) or not in_range(value):
        error = InputTypeError if not is_type(value) else InputError
        raise error(f"{name} must be {what}{' or None' if optional else ''}, got {value!r}")
    return convert(value)


def check_bool(value: object, name: str) -> bool:
    """True or False (numpy bools pass; 0 and 1 do not)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_int(value: object, name: str, minimum: int, optional: bool = False) -> int | None:
    """An int (numpy ints pass) >= ``minimum``."""
    return _check(value, name, f"an int >= {minimum}", _is_int, lambda v: v >= minimum, int, optional)


def check_positive_int(value: object, name: str, optional: bool = False) -> int | None:
    """An int >= 1."""
    return _check(value, name, "a positive int", _is_int, lambda v: v >= 1, int, optional)


def check_non_negative_int(value: object, name: str, optional: bool = False) -> int | None:
    """An int >= 0."""
    return check_int(value, name, 0, optional)


def check_number(value: object, name: str, optional: bool = False) -> float | None:
    """A finite real number (ints pass)."""
    return _check(value, name, "a finite number", _is_real, math.isfinite, float, optional)


def check_positive_float(value: object, name: str, optional: bool = False) -> float | None:
    """A finite real number > 0."""
    return _check(
        value, name, "a positive number", _is_real, lambda v: math.isfinite(v) and v > 0, float, optional
    )


def check_non_negative_float(value: object, name: str, optional: bool = False) -> float | None:
    """A finite real number >= 0."""
    return _check(
        value, name, "a number >= 0", _is_real, lambda v: math.isfinite(v) and v >= 0, float, optional
    )


def check_fraction(value: object, name: str, optional: bool = False) -> float | None:
    """A real number in (0, 1] (a share: 1.0 keeps everything)."""
    return _check(value, name, "a fraction in (0, 1]", _is_real, lambda v: 0.0 < v <= 1.0, float, optional)


def check_choice(value: object, name: str, choices: Sequence) -> object:
    """One of ``choices``."""
    if value not in choices:
        raise InputError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
