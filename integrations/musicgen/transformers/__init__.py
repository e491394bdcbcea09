"""transformers' MusicGen (``MusicgenForConditionalGeneration``): its backend (:mod:`.backend`),
log-probabilities and seeded generation with codes (:mod:`deramos_reward.integrations.musicgen.logprobs`), straight-through decoding
(:mod:`.decoding`) and small models built from configs (:mod:`.builders`)."""

from __future__ import annotations

from .backend import TRANSFORMERS_LORA_TARGETS, TransformersMusicGen
from .builders import (
    byte_level_t5_tokenizer,
    musicgen_small_architecture,
    musicgen_small_config,
    tiny_musicgen,
    tiny_musicgen_config,
)
from .decoding import transformers_decode_differentiable, transformers_soft_decode
from .logprobs import generate_with_codes, transformers_sequence_logprobs, transformers_text_inputs

__all__ = [
    "TRANSFORMERS_LORA_TARGETS",
    "TransformersMusicGen",
    "byte_level_t5_tokenizer",
    "generate_with_codes",
    "musicgen_small_architecture",
    "musicgen_small_config",
    "tiny_musicgen",
    "tiny_musicgen_config",
    "transformers_decode_differentiable",
    "transformers_sequence_logprobs",
    "transformers_soft_decode",
    "transformers_text_inputs",
]
