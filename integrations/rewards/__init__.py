"""Rewards for MusicGen trainers: DeRA-MOS (or any audio reward) with trl's reward-function signature
(:mod:`.function`), and a judge-free synthetic reward for tests and sanity runs (:mod:`.synthetic`)."""

from __future__ import annotations

from .function import AudioRewardFunction, codes_decoder, prompt_text
from .synthetic import LowBandEnergyReward, low_band_energy_fraction

__all__ = [
    "AudioRewardFunction",
    "LowBandEnergyReward",
    "codes_decoder",
    "low_band_energy_fraction",
    "prompt_text",
]
