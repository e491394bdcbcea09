"""The MusicGen backend for AudioCraft (``audiocraft.models.MusicGen``).

``audiocraft`` is never a declared dependency (it pins an old torch); see the README's recipe.
Sampling options are AudioCraft's generation params (``use_sampling``, ``temp`` (``temperature`` is
accepted), ``top_k``, ``top_p``, ``cfg_coef``, ``two_step_cfg``); they and the length override the
model's own settings for one call only. Generation goes through ``MusicGen._prepare_tokens_and_attributes``
/ ``_generate_tokens`` (AudioCraft 1.3), so a prefix is continued from its codes themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from deramos_reward._optional import require
from deramos_reward.integrations.musicgen.audiocraft.decoding import audiocraft_decode_differentiable
from deramos_reward.integrations.musicgen.audiocraft.logprobs import (
    audiocraft_code_logits,
    audiocraft_generation_params,
    audiocraft_unguided_generation,
)
from deramos_reward.integrations.musicgen.base import MusicGenBackend, SamplingOptions, check_policy_sampling

AUDIOCRAFT_LORA_TARGETS = (
    r"(.*\.)?transformer\.layers\.\d+\.(self_attn\.out_proj|cross_attention\.out_proj|linear1|linear2)"
)
"""peft ``target_modules`` regex for AudioCraft's ``LMModel``. Its attention keeps q/k/v in one
``in_proj_weight`` Parameter (not an ``nn.Linear``), so LoRA goes on the attention output projections
and the feed-forward layers."""

_LENGTH = "the length comes from the duration (--duration), in code frames"
SAMPLING = SamplingOptions(
    library="AudioCraft MusicGen",
    kinds={
        "use_sampling": "bool",
        "temp": "number>0",
        "temperature": "number>0",  # accepted for temp
        "top_k": "int>=0",
        "top_p": "fraction",
        "cfg_coef": "number>=0",
        "two_step_cfg": "bool",
    },
    renamed={"guidance_scale": "cfg_coef", "do_sample": "use_sampling"},
    refused={
        "duration": _LENGTH,
        "extend_stride": _LENGTH,
        "max_length": _LENGTH,
        "max_new_tokens": _LENGTH,
        "num_return_sequences": "samples per prompt come from n (--n)",
    },
)
"""AudioCraft's generation params (``MusicGen.set_generation_params``) that sampling takes, with their kinds."""


class AudioCraftMusicGen(MusicGenBackend):
    """An AudioCraft ``MusicGen``; a peft adapter goes on its ``lm``."""

    name = "audiocraft"

    def __init__(self, musicgen: Any):
        super().__init__(musicgen, None)
        self.sample_rate, self.frame_rate = int(musicgen.sample_rate), float(musicgen.frame_rate)
        self.num_codebooks, self.card = int(musicgen.lm.num_codebooks), int(musicgen.lm.card)
        self.peft_lm: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.lm.parameters())).device

    def to(self, device: torch.device | str) -> AudioCraftMusicGen:
        device = torch.device(device)
        if device == self.device:
            return self
        musicgen = self.model
        musicgen.lm.to(device)  # with any adapter injected into it, and its condition provider
        musicgen.compression_model.to(device)
        # AudioCraft caches the device and its autocast (float16 on accelerators) at construction
        musicgen.device = device
        autocast = require("audiocraft.utils.autocast")
        musicgen.autocast = autocast.TorchAutocast(
            enabled=device.type != "cpu", device_type=device.type, dtype=torch.float16
        )
        return self

    @property
    def min_frames(self) -> int:
        return 1

    def default_frames(self) -> int:
        return int(self.model.duration * self.model.frame_rate)  # AudioCraft's own rounding

    @contextlib.contextmanager
    def _settings(self, frames: int, overrides: dict) -> Iterator[None]:
        """Set the model's duration to ``frames`` and update its generation params, restoring both after."""
        musicgen = self.model
        saved = (musicgen.duration, dict(musicgen.generation_params))
        # int(duration * frame_rate) == frames inside AudioCraft, without float round-off
        musicgen.duration = (frames + 0.5) / musicgen.frame_rate
        musicgen.generation_params.update(overrides)
        try:
            yield
        finally:
            musicgen.duration, musicgen.generation_params = saved

    def _sample(
        self, prompts: list[str], frames: int, prefix: torch.Tensor | None, sampling: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        overrides = audiocraft_generation_params(sampling)
        musicgen = self.model
        with self._settings(frames, overrides), self._guidance(musicgen.generation_params):
            attributes, _ = musicgen._prepare_tokens_and_attributes(prompts, None)
            prompt_tokens = None if prefix is None else prefix.to(self.device)
            tokens = musicgen._generate_tokens(attributes, prompt_tokens)
            return musicgen.generate_audio(tokens), tokens

    def _guidance(self, params: dict[str, Any]) -> contextlib.AbstractContextManager:
        """At ``cfg_coef`` 1 AudioCraft would still run the unconditional half of the batch at every step
        (``uncond + (cond - uncond) * 1``): sample from the conditional model alone instead."""
        lm = self.model.lm
        coef = params.get("cfg_coef", lm.cfg_coef)
        return audiocraft_unguided_generation(lm) if coef == 1 else contextlib.nullcontext()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.generate_audio(codes.to(self.device))

    def decode_differentiable(
        self, codes: torch.Tensor, logits: torch.Tensor, *, gradient_checkpointing: bool = False
    ) -> torch.Tensor:
        return audiocraft_decode_differentiable(
            self.model, codes.to(self.device), logits, gradient_checkpointing=gradient_checkpointing
        )

    def policy_sampling(
        self, temperature: float = 1.0, top_k: int = 0, guidance_scale: float = 1.0
    ) -> dict[str, Any]:
        scale = check_policy_sampling(temperature, top_k, guidance_scale)
        # cfg_coef 1 samples the conditional model alone (see _guidance); one-batch guidance otherwise;
        # top_k 0 and top_p 0: plain multinomial sampling
        return {
            "use_sampling": True,
            "cfg_coef": scale,
            "two_step_cfg": False,
            "temp": float(temperature),
            "top_k": top_k,
            "top_p": 0.0,
        }

    def code_logits(
        self,
        prompts: Sequence[str],
        codes: torch.Tensor,
        *,
        keep_only_valid_steps: bool = False,
        guidance_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return audiocraft_code_logits(
            self.trainable_module(),
            codes,
            list(prompts),
            keep_only_valid_steps=keep_only_valid_steps,
            guidance_scale=guidance_scale,
        )

    # ---- adapters -----------------------------------------------------------------------------
    def trainable_module(self) -> nn.Module:
        return self.peft_lm if self.peft_lm is not None else self.model.lm

    def set_trainable_module(self, module: nn.Module) -> None:
        self.peft_lm = module

    def lora_target_modules(self) -> str:
        return AUDIOCRAFT_LORA_TARGETS
