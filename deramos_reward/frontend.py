"""Audio front-end: anything a user holds -> mono waveforms at the encoder's rate.

All tensor work is torch and differentiable (downmix, resample); file reading uses soundfile.
Clips longer than the encoder window are cut into deterministic overlapping windows here
(``plan_windows``); ``windowing`` encodes them and combines their outputs per clip.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .errors import AudioInputWarning, InputError, InputTypeError
from .validation import check_file, check_finite, check_sample_rate, warn_if_loud

AudioLike = torch.Tensor | np.ndarray | str | os.PathLike


def load_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Read an audio file with soundfile.

    A file shorter than its header announces (a truncated download or copy) is read as far as it
    goes, with an ``AudioInputWarning`` naming it.

    Returns:
        (audio [C, T] float32, sample_rate)
    """
    path = check_file(path, "audio file")
    try:
        info = sf.info(path)
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError for corrupt files
        raise InputError(f"audio file {path!r} could not be read as audio: {err}") from err
    if data.shape[0] == 0:
        raise InputError(f"audio file {path!r} contains no samples")
    announced = _announced_frames(info)
    if announced > data.shape[0]:
        warnings.warn(
            f"audio file {path!r} is truncated: its header announces {announced / rate:.2f} s but it "
            f"holds {data.shape[0] / rate:.2f} s; scoring the part that is there",
            AudioInputWarning,
            stacklevel=2,
        )
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


# libsndfile's log for a WAV/AIFF whose data chunk is cut short: "data : 64000 (should be 31979)"
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _announced_frames(info) -> int:
    """Frames the file's header announces (soundfile's ``info.frames`` counts what is present)."""
    match = _SHORT_CHUNK.search(info.extra_info or "")
    frames = int(info.frames)
    if match and int(match.group(2)) > 0:
        announced_bytes, present_bytes = int(match.group(1)), int(match.group(2))
        frames = max(frames, round(frames * announced_bytes / present_bytes))
    return frames


def as_float_tensor(audio: object, name: str = "audio") -> torch.Tensor:
    """Convert an array/tensor to a floating tensor; integer PCM is scaled to [-1, 1)."""
    if isinstance(audio, np.ndarray):
        if audio.dtype == object:
            raise InputTypeError(f"{name} must be a numeric array, got dtype=object")
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if not isinstance(audio, torch.Tensor):
        raise InputTypeError(
            f"{name} must be a torch.Tensor, numpy array or file path, got {type(audio).__name__}"
        )
    if audio.dtype == torch.bool or audio.is_complex():
        raise InputTypeError(f"{name} must hold real samples, got dtype {audio.dtype}")
    if not audio.is_floating_point():
        info = torch.iinfo(audio.dtype)
        if info.min == 0:  # unsigned PCM (8-bit WAV) is offset binary: silence is the midpoint
            half = (float(info.max) + 1.0) / 2.0
            return (audio.to(torch.float32) - half) / half
        scale = float(max(abs(info.min), info.max))
        audio = audio.to(torch.float32) / scale
    elif audio.dtype in (torch.float16, torch.bfloat16):
        # half precision holds samples, but downmix/resampling/mel run in float32: summing
        # channels or the resampler's ringing in half overflows or rounds away detail
        audio = audio.to(torch.float32)
    return audio


def to_mono(audio: torch.Tensor) -> torch.Tensor:
    """Average channels: [..., C, T] -> [..., T]."""
    return audio.mean(dim=-2)


class _Resampler(torch.nn.Module):
    """torchaudio's windowed-sinc resampler; instances are cached so kernels are built once."""

    def __init__(self, orig: int, new: int):
        super().__init__()
        self.resample = torchaudio.transforms.Resample(orig, new)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.resample(wave)


@lru_cache(maxsize=32)
def _resampler(orig: int, new: int, dtype: torch.dtype, device: str) -> _Resampler:
    return _Resampler(orig, new).to(device=device, dtype=dtype)


# torchaudio's kernel is [new', orig' + width] for the reduced ratio new'/orig', so two nearly
# coprime rates (say 191999 -> 24000 Hz) would need a kernel of many GB. Such ratios are replaced
# by the closest fraction with a denominator of at most this: a rate error of at most 0.05 %
# (under one cent of pitch) for any integer rate in 8-192 kHz. Every standard rate pair
# (8, 11.025, 16, 22.05, 32, 44.1, 48, 88.2, 96, 176.4, 192 kHz) reduces below it and stays exact.
MAX_RESAMPLE_DENOMINATOR = 1000


def resample_ratio(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """(orig', new') with new'/orig' equal to new/orig, or within 0.05 % for unusual rate pairs."""
    ratio = Fraction(new_rate, orig_rate)
    if ratio.denominator > MAX_RESAMPLE_DENOMINATOR:
        ratio = ratio.limit_denominator(MAX_RESAMPLE_DENOMINATOR)
    return ratio.denominator, ratio.numerator


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample ``wave`` [..., T] from ``orig_rate`` to ``new_rate`` (differentiable).

    Output [..., ceil(T * new' / orig')] with ``resample_ratio``'s reduced ratio.
    """
    if orig_rate == new_rate:
        return wave
    orig_rate, new_rate = resample_ratio(orig_rate, new_rate)
    dtype = wave.dtype if wave.dtype in (torch.float32, torch.float64) else torch.float32
    out = _resampler(orig_rate, new_rate, dtype, str(wave.device))(wave.to(dtype))
    return out.to(wave.dtype) if wave.is_floating_point() else out


def _downmix(audio: torch.Tensor, name: str, rank: int, layouts: str) -> torch.Tensor:
    """``audio`` with ``rank`` axes, or ``rank + 1`` with a channel axis before time (averaged away)
    -> ``rank`` axes. Any other rank is an error naming ``name`` and the accepted ``layouts``."""
    if audio.dim() == rank + 1:
        if audio.shape[-2] == 0:
            raise InputError(f"{name} has 0 channels; expected at least one")
        audio = to_mono(audio)
    if audio.dim() != rank:
        raise InputError(f"{name} must be {layouts}, got shape {tuple(audio.shape)}")
    return audio


@dataclass
class Clips:
    """A list of mono clips at one sample rate, each its own length (no padding)."""

    waves: list[torch.Tensor]  # each [T_i]
    sample_rate: int

    @property
    def lengths(self) -> list[int]:
        return [int(w.shape[-1]) for w in self.waves]


def batch_to_clips(audio: object, sample_rate: int, target_rate: int, name: str = "audio") -> Clips:
    """A batched tensor -> mono clips at ``target_rate``.

    Args:
        audio: [T] (one clip), [B, T] or [B, C, T]; float or integer PCM, tensor or numpy.
        sample_rate: rate of ``audio`` in Hz.
    """
    sample_rate = check_sample_rate(sample_rate)
    audio = as_float_tensor(audio, name)
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    audio = _downmix(audio, name, 2, "[T], [B, T] or [B, C, T]")
    if audio.shape[0] == 0:
        raise InputError(f"{name} holds no clips (batch size 0)")
    if audio.shape[-1] == 0:
        raise InputError(f"{name} is empty (0 samples); expected at least one sample per clip")
    warn_if_loud(check_finite(audio, name), name)
    audio = resample(audio, sample_rate, target_rate)
    return Clips(list(audio.unbind(0)), target_rate)


def items_to_clips(
    items: Sequence[AudioLike], sample_rate: int | None, target_rate: int, name: str = "audio"
) -> Clips:
    """A list of clips (paths, [T] or channels-first [C, T] arrays) -> mono clips at ``target_rate``.

    Files carry their own rate; arrays need ``sample_rate``. A file whose rate differs from a
    given ``sample_rate`` is an error, since silently trusting either would mis-score it.
    """
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    waves = []
    for i, item in enumerate(items):
        label = f"{name}[{i}]"
        if isinstance(item, (str, os.PathLike)):
            wave, rate = load_audio(item)
            if sample_rate is not None and rate != sample_rate:
                raise InputError(
                    f"{label} ({os.fspath(item)!r}) is {rate} Hz but sample_rate={sample_rate} was given"
                )
            label = f"{label} ({os.fspath(item)!r})"
        else:
            if sample_rate is None:
                raise InputError(f"{label} is an array, so sample_rate must be given")
            wave, rate = as_float_tensor(item, label), sample_rate
            if wave.dim() == 2 and wave.shape[0] > wave.shape[1]:
                raise InputError(
                    f"{label} has shape {tuple(wave.shape)}; expected channels-first [C, T] (transpose a [T, C] array)"
                )
        rate = check_sample_rate(rate, f"sample rate of {label}")
        wave = _downmix(wave, label, 1, "[T] or [C, T]")
        if wave.shape[0] == 0:
            raise InputError(f"{label} is empty (0 samples)")
        warn_if_loud(check_finite(wave, label), label)
        waves.append(resample(wave, rate, target_rate))
    if not waves:
        raise InputError(f"{name} holds no clips")
    return Clips(waves, target_rate)


def to_clips(audio: object, sample_rate: int | None, target_rate: int, name: str = "audio") -> Clips:
    """Dispatch: a list/tuple is per-clip items, a tensor/array is a batch, a path is one file."""
    if isinstance(audio, (list, tuple, str, os.PathLike)):
        return items_to_clips(audio, sample_rate, target_rate, name)
    if sample_rate is None:
        raise InputError(f"{name} is an array, so sample_rate must be given")
    return batch_to_clips(audio, sample_rate, target_rate, name)


@dataclass(frozen=True)
class Window:
    """One window of one clip: samples [start, stop) of clip ``clip``."""

    clip: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_windows(lengths: Sequence[int], window: int, hop: int) -> list[Window]:
    """Cut clips into windows of at most ``window`` samples, starting every ``hop`` samples.

    A clip no longer than ``window`` is one window (never padded to the window). A longer clip
    gets windows at 0, hop, 2*hop, ... until one reaches its end; the last may be shorter.
    The model weights each window's score by its length.
    """
    if window <= 0 or hop <= 0 or hop > window:
        raise InputError(f"need 0 < hop <= window, got window={window}, hop={hop}")
    out = []
    for clip, n in enumerate(lengths):
        start = 0
        while True:
            stop = min(start + window, n)
            out.append(Window(clip, start, stop))
            if stop >= n:
                break
            start += hop
    return out
