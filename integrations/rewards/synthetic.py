"""Rewards computed from the audio alone (no judge), for checking that a fine-tuning loop learns.

A loop that cannot raise a simple, learnable, differentiable reward will not raise DeRA-MOS either;
these rewards cost nothing to evaluate and have a known optimum. They have the reward signature
``reward(audio [B, C, T], sample_rate, prompts) -> [B]`` and are differentiable in the audio.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deramos_reward.validation import check_sample_rate

__all__ = ["LowBandEnergyReward", "low_band_energy_fraction"]


def low_band_energy_fraction(
    audio: torch.Tensor, sample_rate: int, cutoff_hz: float, n_fft: int = 512
) -> torch.Tensor:
    """Fraction of the spectral energy below ``cutoff_hz``, from a Hann-window STFT of the clip minus its
    mean (a DC offset is inaudible and would count as low-band energy).

    Args:
        audio: ``[B, T]`` or ``[B, C, T]`` (channels are averaged first).
        sample_rate: Hz.
        cutoff_hz: band edge in Hz, in ``(0, sample_rate / 2)``.
        n_fft: STFT size (hop ``n_fft // 4``); clips shorter than ``n_fft`` are zero-padded.

    Returns:
        ``[B]`` in ``[0, 1]`` (float32 or float64 like ``audio``), differentiable in ``audio``; a silent
        clip gets 0.5 (the energy is floored at a tiny epsilon on both sides).
    """
    sample_rate = check_sample_rate(sample_rate)
    if not isinstance(audio, torch.Tensor) or audio.dim() not in (2, 3) or not audio.dtype.is_floating_point:
        raise ValueError(
            f"audio must be a float tensor [B, T] or [B, C, T], got {getattr(audio, 'shape', type(audio).__name__)}"
        )
    if (
        isinstance(cutoff_hz, bool)
        or not isinstance(cutoff_hz, (int, float))
        or not 0 < cutoff_hz < sample_rate / 2
    ):
        raise ValueError(f"cutoff_hz must be in (0, {sample_rate / 2}) Hz, got {cutoff_hz!r}")
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < 8:
        raise ValueError(f"n_fft must be an int >= 8, got {n_fft!r}")
    mono = audio.mean(1) if audio.dim() == 3 else audio
    if mono.dtype not in (torch.float32, torch.float64):
        mono = mono.float()
    mono = mono - mono.mean(-1, keepdim=True)
    if mono.shape[-1] < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.shape[-1]))
    window = torch.hann_window(n_fft, dtype=mono.dtype, device=mono.device)
    spec = torch.stft(mono, n_fft, hop_length=n_fft // 4, window=window, center=False, return_complex=True)
    power = spec.real.square() + spec.imag.square()  # [B, F, frames]
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate).to(mono.device)
    eps = torch.finfo(mono.dtype).tiny
    low = power[:, freqs < cutoff_hz].sum((1, 2)) + eps
    return low / (power.sum((1, 2)) + 2 * eps)


class LowBandEnergyReward:
    """``reward(audio, sample_rate, prompts) -> [B]``: :func:`low_band_energy_fraction` (prompts ignored).

    Args:
        cutoff_hz: band edge in Hz.
        n_fft: STFT size.
    """

    __name__ = "low_band_energy"

    def __init__(self, cutoff_hz: float = 1000.0, n_fft: int = 512):
        if isinstance(cutoff_hz, bool) or not isinstance(cutoff_hz, (int, float)) or cutoff_hz <= 0:
            raise ValueError(f"cutoff_hz must be a positive number of Hz, got {cutoff_hz!r}")
        self.cutoff_hz = float(cutoff_hz)
        self.n_fft = n_fft

    def __repr__(self) -> str:
        return f"LowBandEnergyReward(cutoff_hz={self.cutoff_hz}, n_fft={self.n_fft})"

    def __call__(
        self, audio: torch.Tensor, sample_rate: int, prompts: Sequence[str] | None = None
    ) -> torch.Tensor:
        return low_band_energy_fraction(audio, sample_rate, self.cutoff_hz, self.n_fft)
