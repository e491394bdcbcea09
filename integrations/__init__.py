"""Adapters for other stacks, installed as ``deramos_reward.integrations``.

Each submodule imports its stack lazily, so ``import deramos_reward`` never needs
audiocraft, peft or trl. Every MusicGen consumer talks to one backend interface::

    from deramos_reward.integrations import musicgen_backend
    backend = musicgen_backend(model, processor)   # transformers or AudioCraft MusicGen, peft ok

The layout::

    musicgen/        the backend interface; transformers/ and audiocraft/, each with its backend
                     (log-probabilities, straight-through decoding) and builders of small models
    rerank.py        best-of-N and progressive best-of-N with MusicGen
    rewards/         trl-signature reward function, a synthetic reward
    training/        common/ (config, LoRA, trainer base, checkpoints, logs), dpo/, rl/, backprop/
    dpo.py, rl.py, backprop.py   the three fine-tuning entry points (re-exports)
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

_LAZY = {
    "musicgen_backend": "musicgen.factory",
    "load_musicgen_backend": "musicgen.factory",
    "MusicGenBackend": "musicgen.base",
    "best_of_n": "rerank",
    "progressive_best_of_n": "rerank",
    "AudioRewardFunction": "rewards.function",
    "MusicDPOConfig": "training.dpo.config",
    "MusicDPOTrainer": "training.dpo.trainer",
    "MusicRLConfig": "training.rl.config",
    "MusicRLTrainer": "training.rl.trainer",
    "MusicBackpropConfig": "training.backprop.config",
    "MusicRewardBackpropTrainer": "training.backprop.trainer",
    "load_adapter": "training.common.lora",
}
_MODULES = {
    # the builders' modules under the names they had before integrations/ was laid out by concept
    "audiocraft": "musicgen.audiocraft",
    "transformers_musicgen": "musicgen.transformers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    setattr(sys.modules[__name__], name, value)
    return value
