"""Pluggable backbones behind one small interface (see ``base``)."""

from __future__ import annotations

from ..config import AudioEncoderConfig, TextEncoderConfig
from .base import AudioEncoder, AudioFrames, TextEncoder, TextTokens
from .loading import BackboneUnavailableError


def build_audio_encoder(config: AudioEncoderConfig) -> AudioEncoder:
    if config.kind == "muq":
        from .muq import MuQEncoder

        return MuQEncoder(config)
    if config.kind == "clap":
        from .clap import ClapAudioEncoder

        return ClapAudioEncoder(config)
    raise ValueError(f"unknown audio encoder kind {config.kind!r}")


def build_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    if config.kind == "roberta":
        from .roberta import RobertaEncoder

        return RobertaEncoder(config)
    if config.kind == "clap":
        from .clap import ClapTextEncoder

        return ClapTextEncoder(config)
    if config.kind == "hf":
        from .hf_text import HFTextEncoder

        return HFTextEncoder(config)
    raise ValueError(f"unknown text encoder kind {config.kind!r}")


__all__ = [
    "AudioEncoder",
    "AudioFrames",
    "BackboneUnavailableError",
    "TextEncoder",
    "TextTokens",
    "build_audio_encoder",
    "build_text_encoder",
]
