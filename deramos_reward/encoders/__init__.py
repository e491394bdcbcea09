"""Pluggable backbones behind one small interface (see ``base``)."""

from __future__ import annotations

import importlib

from ..config import AudioEncoderConfig, TextEncoderConfig
from .base import AudioEncoder, AudioFrames, TextEncoder, TextTokens
from .loading import BackboneUnavailableError

# kind -> (submodule, class); submodules are imported only when their kind is built
AUDIO_ENCODERS = {
    "muq": ("muq", "MuQEncoder"),
    "clap": ("clap", "ClapAudioEncoder"),
    "crepe": ("crepe", "CrepeEncoder"),
}
TEXT_ENCODERS = {
    "roberta": ("roberta", "RobertaEncoder"),
    "clap": ("clap", "ClapTextEncoder"),
    "hf": ("hf_text", "HFTextEncoder"),
}


def _build(
    table: dict[str, tuple[str, str]], config: AudioEncoderConfig | TextEncoderConfig, what: str
) -> AudioEncoder | TextEncoder:
    if config.kind not in table:
        raise ValueError(f"unknown {what} encoder kind {config.kind!r}")
    module, name = table[config.kind]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)(config)


def build_audio_encoder(config: AudioEncoderConfig) -> AudioEncoder:
    return _build(AUDIO_ENCODERS, config, "audio")


def build_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    return _build(TEXT_ENCODERS, config, "text")


__all__ = [
    "AudioEncoder",
    "AudioFrames",
    "BackboneUnavailableError",
    "TextEncoder",
    "TextTokens",
    "build_audio_encoder",
    "build_text_encoder",
]
