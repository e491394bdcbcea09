"""MusicGen behind one interface, whichever library it comes from.

:func:`musicgen_backend` (in :mod:`.factory`, the one place that tells the libraries apart) wraps a
transformers ``MusicgenForConditionalGeneration`` or an AudioCraft ``MusicGen`` (peft-wrapped or not) in a
:class:`MusicGenBackend` (:mod:`.base`): generation with codes, decoding, straight-through decoding and
sequence log-probabilities under the delay pattern. Each library has a subpackage with its backend, its
log-probability and straight-through code, and builders of small models from configs::

    musicgen/
        factory.py            musicgen_backend, load_musicgen_backend
        base.py               MusicGenBackend, sampling-option checks, adapter_disabled
        logprobs.py           the delay-pattern conventions, guided logits, gathering log-probabilities
        straight_through.py   the straight-through estimator (one-hot, soft codebook lookup)
        transformers/         backend.py, logprobs.py, decoding.py, builders.py (tiny_musicgen ...)
        audiocraft/           backend.py, logprobs.py, decoding.py, builders.py (tiny_musicgen ...)
"""

from __future__ import annotations

from .base import MusicGenBackend, adapter_disabled, unwrap_module
from .factory import (
    LIBRARIES,
    check_sampling,
    load_musicgen_backend,
    maybe_musicgen_backend,
    musicgen_backend,
)
from .logprobs import SequenceLogProbs, guided_logits

__all__ = [
    "LIBRARIES",
    "MusicGenBackend",
    "SequenceLogProbs",
    "adapter_disabled",
    "check_sampling",
    "guided_logits",
    "load_musicgen_backend",
    "maybe_musicgen_backend",
    "musicgen_backend",
    "unwrap_module",
]
