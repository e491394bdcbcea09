"""The MusicGen backend for Hugging Face transformers (``MusicgenForConditionalGeneration``, Melody too).

Sampling options are ``model.generate``'s own (``do_sample``, ``guidance_scale``, ``temperature``,
``top_k``, ``top_p``...). Length is always given in code frames; ``max_length``, ``max_new_tokens``,
``num_return_sequences`` (MusicGen joins the samples along time) and ``decoder_input_ids`` (use
``prefix``) are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deramos_reward.integrations.musicgen.base import MusicGenBackend, SamplingOptions, check_policy_sampling
from deramos_reward.integrations.musicgen.transformers.decoding import transformers_decode_differentiable
from deramos_reward.integrations.musicgen.transformers.logprobs import (
    generate_with_codes,
    text_token_limit,
    transformers_code_logits,
    transformers_text_inputs,
)

TRANSFORMERS_LORA_TARGETS = (
    r"(.*\.)?decoder\.layers\.\d+\.((self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)"
)
"""peft ``target_modules`` regex for transformers MusicGen: the decoder's self- and cross-attention
projections and its feed-forward layers (not the T5 text encoder, not EnCodec, not the output heads)."""

_LENGTH = "the length comes from the duration (--duration), in code frames"
_REFUSED = {
    "max_length": _LENGTH,
    "max_new_tokens": _LENGTH,
    "duration": _LENGTH,
    "num_return_sequences": "samples per prompt come from n (--n); MusicGen would join them along time",
    "decoder_input_ids": "pass prefix= codes [B, K, S0]",
}

SAMPLING = SamplingOptions(
    library="transformers MusicGen",
    kinds={
        "do_sample": "bool",
        "temperature": "number>0",
        "top_k": "int>=0",
        "top_p": "fraction",
        "min_p": "fraction",
        "typical_p": "fraction",
        "epsilon_cutoff": "fraction",
        "eta_cutoff": "fraction",
        "guidance_scale": "number>=0",
        "repetition_penalty": "number>0",
    },
    renamed={
        "cfg_coef": "guidance_scale",
        "use_sampling": "do_sample",
        "temp": "temperature",
        "two_step_cfg": None,
        "extend_stride": None,
    },
    refused=_REFUSED,
)
"""The sampling options of ``MusicgenForConditionalGeneration.generate`` (``GenerationConfig`` names) that
sampling from MusicGen takes, with their kinds (checked by ``check_sampling_options``)."""


class TransformersMusicGen(MusicGenBackend):
    """A transformers MusicGen (or a peft model of one) and its ``MusicgenProcessor``."""

    name = "transformers"

    def __init__(self, model: Any, processor: Any = None):
        self.peft_model = model if hasattr(model, "get_base_model") else None
        base = model.get_base_model() if self.peft_model is not None else model
        super().__init__(base, processor)
        codec, decoder = base.config.audio_encoder, base.decoder
        self.sample_rate, self.frame_rate = int(codec.sampling_rate), float(codec.frame_rate)
        self.num_codebooks, self.card = int(decoder.num_codebooks), int(decoder.config.vocab_size)

    def _processor(self) -> Any:
        if self.processor is None:
            raise ValueError(
                "processor (the model's MusicgenProcessor) is required to generate or score with a "
                "transformers MusicGen: musicgen_backend(model, processor)"
            )
        return self.processor

    def check_ready(self) -> None:
        self._processor()

    def prompt_tokens(self, prompts: Sequence[str]) -> tuple[int | None, list[int]]:
        tokenizer = self._processor().tokenizer
        limit = text_token_limit(tokenizer)
        if limit is None:
            return None, []
        return limit, [len(ids) for ids in tokenizer(list(prompts), verbose=False)["input_ids"]]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: torch.device | str) -> TransformersMusicGen:
        self.model.to(device)  # text encoder, decoder (with any adapter) and EnCodec
        return self

    @property
    def _channel_codebooks(self) -> int:
        stereo = self.model.config.decoder.audio_channels == 2
        return self.num_codebooks // 2 if stereo else self.num_codebooks

    @property
    def min_frames(self) -> int:
        return self._channel_codebooks

    def default_frames(self) -> int:
        # generation starts from one BOS step; the delay pattern costs (codebooks - 1) more
        return self.model.generation_config.max_length - 1 - (self._channel_codebooks - 1)

    # ---- generation ---------------------------------------------------------------------------
    def _sample(
        self, prompts: list[str], frames: int, prefix: torch.Tensor | None, sampling: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for key, hint in _REFUSED.items():
            if key in sampling:
                raise ValueError(f"{key} is not a sampling option here: {hint}")
        start = 0 if prefix is None else int(prefix.shape[-1])
        if prefix is not None:
            # undelayed prefix codes [B * K, S0]: generate prepends BOS and lays out the delay pattern
            sampling["decoder_input_ids"] = prefix.reshape(-1, start).to(self.device)
        steps = frames - start + self._channel_codebooks - 1
        audio, codes = generate_with_codes(self.model, self._processor(), prompts, steps, **sampling)
        if prefix is not None:
            # generate keeps the prefix (its delay mask holds it) but the raw decoder sequence has
            # sampled tokens under the prefix's delayed tail: the codes decoded are the prefix's.
            codes = torch.cat([prefix.to(codes.device), codes[..., start:]], dim=-1)
        return audio, codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        codec = self.model.audio_encoder
        codes = codes.to(next(codec.parameters()).device)[None]  # [1, B, K, S]: one chunk
        with torch.no_grad():
            if self.model.config.decoder.audio_channels == 1:
                return codec.decode(codes, [None]).audio_values
            left = codec.decode(codes[:, :, ::2], [None]).audio_values
            right = codec.decode(codes[:, :, 1::2], [None]).audio_values
            return torch.cat([left, right], dim=1)

    def decode_differentiable(
        self, codes: torch.Tensor, logits: torch.Tensor, *, gradient_checkpointing: bool = False
    ) -> torch.Tensor:
        return transformers_decode_differentiable(
            self.model, codes, logits, gradient_checkpointing=gradient_checkpointing
        )

    def policy_sampling(
        self, temperature: float = 1.0, top_k: int = 0, guidance_scale: float = 1.0
    ) -> dict[str, Any]:
        scale = check_policy_sampling(temperature, top_k, guidance_scale)
        # generate guides only above 1 (at 1 it builds no unconditional batch); top_k 0: no top-k filter
        return {"do_sample": True, "guidance_scale": scale, "temperature": float(temperature), "top_k": top_k}

    def code_logits(
        self,
        prompts: Sequence[str],
        codes: torch.Tensor,
        *,
        keep_only_valid_steps: bool = False,
        guidance_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if guidance_scale != 1 and type(self.model).__name__.startswith("MusicgenMelody"):
            raise ValueError(
                "guided log-probabilities (guidance_scale > 1) are not supported for MusicGen Melody; "
                "use guidance_scale=1"
            )
        inputs = transformers_text_inputs(self._processor(), prompts, device=codes.device)
        return transformers_code_logits(
            self.peft_model if self.peft_model is not None else self.model,
            inputs["input_ids"],
            inputs["attention_mask"],
            codes,
            keep_only_valid_steps=keep_only_valid_steps,
            guidance_scale=guidance_scale,
        )

    # ---- adapters -----------------------------------------------------------------------------
    def trainable_module(self) -> nn.Module:
        return self.peft_model if self.peft_model is not None else self.model

    def set_trainable_module(self, module: nn.Module) -> None:
        self.peft_model = module

    def lora_target_modules(self) -> str:
        return TRANSFORMERS_LORA_TARGETS
