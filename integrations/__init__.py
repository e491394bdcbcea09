"""Adapters for other stacks, installed as ``deramos_reward.integrations``.

Each submodule imports its stack lazily, so ``import deramos_reward`` never needs
audiocraft, peft or trl. Every MusicGen consumer talks to one backend interface::

    from deramos_reward.integrations import musicgen_backend
    backend = musicgen_backend(model, processor)   # transformers or AudioCraft MusicGen, peft ok
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "musicgen_backend": "backend",
    "load_musicgen_backend": "backend",
    "MusicGenBackend": "backend_base",
    "best_of_n": "musicgen_rerank",
    "progressive_best_of_n": "musicgen_rerank",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
