"""Adapters for other stacks, installed as ``deramos_reward.integrations``.

Each submodule imports its stack lazily, so ``import deramos_reward`` never needs
audiocraft, peft or trl. Every MusicGen consumer talks to one backend interface::

    from deramos_reward.integrations import musicgen_backend
    backend = musicgen_backend(model, processor)   # transformers or AudioCraft MusicGen, peft ok
"""

from __future__ import annotations

from deramos_reward._lazy import lazy_getattr

_LAZY = {
    "musicgen_backend": "backend",
    "load_musicgen_backend": "backend",
    "MusicGenBackend": "backend_base",
    "best_of_n": "musicgen_rerank",
    "progressive_best_of_n": "musicgen_rerank",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
