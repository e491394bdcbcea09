"""Shared fixtures: tiny models built from configs (no downloads), synthetic audio."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One thread: tiny models spend more time in thread hand-offs than in arithmetic.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model():
    import deramos_reward as dr

    torch.manual_seed(0)
    return dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_model.save_pretrained(path)
    return path


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 0, seed: int = 0) -> np.ndarray:
    """A decaying tone plus a little noise: [T] or [channels, T] float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * np.exp(-t % 0.5 * 3) + 0.01 * rng.standard_normal(t.shape)
    if channels:
        wave = np.stack([wave * (0.5 + 0.5 * c / channels) for c in range(channels)])
    return wave.astype(np.float32)
