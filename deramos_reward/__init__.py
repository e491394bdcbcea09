"""deramos-reward: DeRA-MOS as a scorer, differentiable reward, reranker and preference signal."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .config import AudioEncoderConfig, DeRAMOSConfig, TextEncoderConfig
from .heads import DeRAMOSOutput
from .model import DeRAMOS
from .scoring import score

__version__ = "0.1.0"

# Submodules and names that pull in more code are loaded on first use.
_LAZY = {
    "losses": ("deramos_reward.losses", None),
    "metrics": ("deramos_reward.metrics", None),
    "MusicReward": ("deramos_reward.reward", "MusicReward"),
    "best_of_n": ("deramos_reward.rerank", "best_of_n"),
    "BestOfNResult": ("deramos_reward.rerank", "BestOfNResult"),
    "progressive_best_of_n": ("deramos_reward.progressive", "progressive_best_of_n"),
    "RewardOutput": ("deramos_reward.reward", "RewardOutput"),
}

if TYPE_CHECKING:
    from . import losses, metrics
    from .progressive import progressive_best_of_n
    from .rerank import BestOfNResult, best_of_n
    from .reward import MusicReward, RewardOutput


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deramos_reward' has no attribute {name!r}")


__all__ = [
    "AudioEncoderConfig",
    "BestOfNResult",
    "DeRAMOS",
    "DeRAMOSConfig",
    "DeRAMOSOutput",
    "MusicReward",
    "RewardOutput",
    "TextEncoderConfig",
    "best_of_n",
    "losses",
    "metrics",
    "progressive_best_of_n",
    "score",
    "__version__",
]
