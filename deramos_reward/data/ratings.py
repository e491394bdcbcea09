"""Rating scales: labels on another scale (0-10, 0-100, ...) are mapped linearly onto 1-5.

DeRA-MOS predicts a MOS on 1-5 (its bins span 1..5). A label outside the scale it is declared on
is an error that names the file and line, so a corpus rated 0-10 is never trained on silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import InputError, InputTypeError

MOS_SCALE = (1.0, 5.0)


def check_rating_scale(scale: Sequence[float] | None, name: str = "rating_scale") -> tuple[float, float]:
    """``(low, high)`` with finite ``low < high`` (None -> the MOS scale 1-5)."""
    if scale is None:
        return MOS_SCALE
    if isinstance(scale, (str, bytes)) or not isinstance(scale, Sequence) or len(scale) != 2:
        raise InputTypeError(f"{name} must be two numbers [low, high], got {scale!r}")
    low, high = scale
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputTypeError(f"{name} must be two finite numbers [low, high], got {list(scale)!r}")
    if not low < high:
        raise InputError(f"{name} must have low < high, got [{low}, {high}]")
    return float(low), float(high)


def to_mos(value: float | None, scale: tuple[float, float], where: str, key: str) -> float | None:
    """A label on ``scale`` -> the same position on 1-5; InputError naming ``where`` if it is outside."""
    if value is None:
        return None
    low, high = scale
    if not low <= value <= high:
        hint = (
            "; ratings on another scale need rating_scale (deramos train/eval --rating-scale LOW HIGH)"
            if scale == MOS_SCALE
            else ""
        )
        raise InputError(
            f"{where}: {key} rating {value:g} is outside the rating scale {low:g}-{high:g}{hint}"
        )
    if scale == MOS_SCALE:
        return float(value)
    return MOS_SCALE[0] + (MOS_SCALE[1] - MOS_SCALE[0]) * (value - low) / (high - low)
