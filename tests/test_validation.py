"""The shared argument checks: what they accept, what they return, how they refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deramos_reward.validation import (
    check_bool,
    check_choice,
    check_clips,
    check_fraction,
    check_int,
    check_non_negative_float,
    check_non_negative_int,
    check_number,
    check_positive_float,
    check_positive_int,
)


@pytest.mark.parametrize(
    "check,value,expected",
    [
        (check_positive_int, 3, 3),
        (check_positive_int, np.int64(2), 2),
        (check_non_negative_int, 0, 0),
        (check_number, -2, -2.0),
        (check_number, np.float32(0.5), 0.5),
        (check_positive_float, 1, 1.0),
        (check_non_negative_float, 0.0, 0.0),
        (check_fraction, 1, 1.0),
        (check_fraction, 0.25, 0.25),
        (check_bool, np.bool_(True), True),
        (check_bool, False, False),
    ],
)
def test_valid_values_come_back_as_plain_python(check, value, expected):
    got = check(value, "x")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "check,value,error,message",
    [
        (check_positive_int, 0, ValueError, "x must be a positive int, got 0"),
        (check_positive_int, True, TypeError, "x must be a positive int, got True"),
        (check_positive_int, 2.0, TypeError, "x must be a positive int, got 2.0"),
        (check_positive_int, "3", TypeError, "x must be a positive int, got '3'"),
        (check_non_negative_int, -1, ValueError, "x must be an int >= 0, got -1"),
        (check_number, float("nan"), ValueError, "x must be a finite number, got nan"),
        (check_number, None, TypeError, "x must be a finite number, got None"),
        (check_positive_float, 0.0, ValueError, "x must be a positive number, got 0.0"),
        (check_positive_float, float("inf"), ValueError, "x must be a positive number, got inf"),
        (check_positive_float, False, TypeError, "x must be a positive number, got False"),
        (check_non_negative_float, -0.5, ValueError, "x must be a number >= 0, got -0.5"),
        (check_fraction, 0, ValueError, r"x must be a fraction in \(0, 1\], got 0"),
        (check_fraction, 1.5, ValueError, r"x must be a fraction in \(0, 1\], got 1.5"),
        (check_bool, 1, TypeError, "x must be True or False, got 1"),
        (check_bool, "yes", TypeError, "x must be True or False, got 'yes'"),
    ],
)
def test_bad_values_are_refused_naming_the_argument(check, value, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        check(value, "x")


def test_int_minimum_optional_and_choice():
    assert check_int(2, "total_frames", 2) == 2
    with pytest.raises(ValueError, match=r"^total_frames must be an int >= 2, got 1$"):
        check_int(1, "total_frames", 2)
    assert check_positive_float(None, "max_seconds", optional=True) is None
    with pytest.raises(ValueError, match=r"^max_seconds must be a positive number or None, got -1$"):
        check_positive_float(-1, "max_seconds", optional=True)
    with pytest.raises(TypeError, match="must be a positive number, got None"):
        check_positive_float(None, "max_seconds")
    assert check_choice("rank", "normalize", ("none", "rank")) == "rank"
    with pytest.raises(ValueError, match=r"^normalize must be one of \('none', 'rank'\), got 'minmax'$"):
        check_choice("minmax", "normalize", ("none", "rank"))


def test_check_clips():
    check_clips([torch.zeros(3), torch.ones(1)])
    for clips, message in [
        ([], "holds no clips"),
        ([torch.zeros(2, 3)], r"audio\[0\] must be a 1-D tensor"),
        ([torch.zeros(3), torch.zeros(0)], r"audio\[1\] is empty"),
        ([torch.tensor([0.0, float("nan")])], r"audio\[0\] contains NaN"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_clips(clips)
