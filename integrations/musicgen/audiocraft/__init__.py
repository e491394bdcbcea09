"""AudioCraft's ``MusicGen``: its backend (:mod:`.backend`), log-probabilities and seeded generation
with codes (:mod:`deramos_reward.integrations.musicgen.logprobs`), straight-through decoding (:mod:`.decoding`) and small models built from
configs (:mod:`.builders`). AudioCraft itself is imported only when one of these runs."""

from __future__ import annotations

from .backend import AUDIOCRAFT_LORA_TARGETS, AudioCraftMusicGen
from .builders import TINY_LUT_BINS, musicgen_small_architecture, tiny_musicgen
from .decoding import audiocraft_decode_differentiable, audiocraft_soft_decode
from .logprobs import audiocraft_generate_with_codes, audiocraft_sequence_logprobs

__all__ = [
    "AUDIOCRAFT_LORA_TARGETS",
    "AudioCraftMusicGen",
    "TINY_LUT_BINS",
    "audiocraft_decode_differentiable",
    "audiocraft_generate_with_codes",
    "audiocraft_sequence_logprobs",
    "audiocraft_soft_decode",
    "musicgen_small_architecture",
    "tiny_musicgen",
]
