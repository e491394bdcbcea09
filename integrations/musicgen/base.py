"""The one interface every MusicGen consumer talks to (best-of-N, pairs, DPO, RL, the CLI).

A backend wraps one MusicGen model of one library (:mod:`deramos_reward.integrations.musicgen.transformers.backend` or
:mod:`deramos_reward.integrations.musicgen.audiocraft.backend`) and speaks in codes ``[B, K, S]`` (int64, frame layout, no delay
padding) and audio ``[B, C, T]``. :func:`deramos_reward.integrations.musicgen_backend` picks the
implementation; it is the only code that looks at which library a model comes from.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from deramos_reward.errors import InputError, InputTypeError
from deramos_reward.integrations.musicgen.logprobs import (
    SequenceLogProbs,
    check_guidance_scale,
    check_prompt_list,
    gather_logprobs,
    seeded,
)


class SamplingOptions(NamedTuple):
    """A MusicGen library's sampling options, as :func:`check_sampling_options` checks them.

    library: the name used in messages. kinds: option -> ``"bool"``, ``"int>=0"``, ``"number"``,
    ``"number>0"``, ``"number>=0"`` or ``"fraction"`` (a number in [0, 1]). renamed: the other
    library's names -> this library's name for the same thing (or None: no counterpart). refused:
    options the library has but that must not be passed -> why.
    """

    library: str
    kinds: Mapping[str, str]
    renamed: Mapping[str, str | None]
    refused: Mapping[str, str]


def _kind_error(kind: str, value: Any) -> tuple[str, type[InputError]] | None:
    """What is wrong with ``value`` for an option of ``kind`` and the error to raise (None: it fits)."""
    if kind == "bool":
        return None if isinstance(value, bool) else ("must be True or False", InputTypeError)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ("must be an integer >= 0" if kind == "int>=0" else "must be a number"), InputTypeError
    if kind == "int>=0":
        return None if isinstance(value, int) and value >= 0 else ("must be an integer >= 0", InputError)
    if not math.isfinite(value):
        return "must be a finite number", InputError
    bad = {
        "number>0": (value <= 0, "must be > 0"),
        "number>=0": (value < 0, "must be >= 0"),
        "fraction": (not 0 <= value <= 1, "must be in [0, 1]"),
    }.get(kind, (False, ""))
    return (bad[1], InputError) if bad[0] else None


def check_sampling_options(options: Mapping[str, Any], spec: SamplingOptions) -> dict[str, Any]:
    """``options`` checked against a library's own sampling options (``spec``) -> a plain dict.

    Raises:
        InputError: an option the library does not have (naming the closest one, or the other
            library's name for it), one it refuses, or a value out of range.
        InputTypeError: a value of the wrong type (``guidance_scale='abc'``).
    """
    if not isinstance(options, Mapping):
        raise InputTypeError(f"sampling options must be a dict, got {type(options).__name__}")
    for key, value in options.items():
        if key in spec.refused:
            raise InputError(f"{key!r} is not a sampling option of {spec.library}: {spec.refused[key]}")
        if key not in spec.kinds:
            raise InputError(_unknown_option(key, spec))
        problem = _kind_error(spec.kinds[key], value)
        if problem is not None:
            text, error = problem
            raise error(f"{spec.library}'s sampling option {key} {text}, got {value!r}")
    return dict(options)


def _unknown_option(key: str, spec: SamplingOptions) -> str:
    names = ", ".join(sorted(spec.kinds))
    if key in spec.renamed:
        ours = spec.renamed[key]
        same = f"; {spec.library} calls it {ours!r}" if ours else f"; {spec.library} has no such option"
        return f"{key!r} is the other MusicGen library's option{same} (its options: {names})"
    close = difflib.get_close_matches(key, list(spec.kinds), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key!r} is not a sampling option of {spec.library}{hint}; its options: {names}"


def unwrap_module(module: Any) -> Any:
    """``module`` without the wrappers training puts around it (DDP / DataParallel, ``torch.compile``)."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        else:
            return module


def adapter_disabled(module: Any) -> contextlib.AbstractContextManager:
    """``with adapter_disabled(policy):`` the model computes as the reference policy (peft adapter off).

    ``module`` is a ``peft.PeftModel``, possibly wrapped for training (unwrapped here); a module without
    an adapter is its own reference (a no-op context). The one adapter-off context of the package: the
    backends' :meth:`MusicGenBackend.reference` and every trainer use it."""
    module = unwrap_module(module)
    if not hasattr(module, "disable_adapter"):
        return contextlib.nullcontext()
    return module.disable_adapter()


def check_policy_sampling(temperature: float, top_k: int, guidance_scale: float = 1.0) -> float:
    """ValueError unless ``temperature`` is a positive number, ``top_k`` an int >= 0 and
    ``guidance_scale`` a number >= 1; returns ``guidance_scale`` as a float."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = no top-k filter), got {top_k!r}")
    return check_guidance_scale(guidance_scale)


class MusicGenBackend(ABC):
    """A MusicGen model behind one interface.

    Attributes:
        name: ``"transformers"`` or ``"audiocraft"``.
        model: the model given (transformers ``MusicgenForConditionalGeneration``, AudioCraft ``MusicGen``),
            with any peft adapter active.
        processor: the transformers ``MusicgenProcessor`` (None for AudioCraft).
        sample_rate: rate of the generated audio in Hz. frame_rate: code frames per second.
        num_codebooks: ``K``, codebooks per frame. card: entries per codebook (ids lie in ``[0, card)``).
    """

    name: str
    sample_rate: int  # the four facts are set by the subclass's constructor
    frame_rate: float
    num_codebooks: int
    card: int

    def __init__(self, model: Any, processor: Any = None):
        self.model = model
        self.processor = processor

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sample_rate={self.sample_rate}, frame_rate={self.frame_rate}, "
            f"num_codebooks={self.num_codebooks}, card={self.card})"
        )

    # ---- facts about the model -------------------------------------------------------------
    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device of the language model's parameters."""

    @abstractmethod
    def to(self, device: torch.device | str) -> MusicGenBackend:
        """Move the whole model (language model, text conditioning, codec) to ``device``; returns self."""

    @property
    @abstractmethod
    def min_frames(self) -> int:
        """Fewest frames a generation or a prefix continuation can add (the delay pattern's span)."""

    @abstractmethod
    def default_frames(self) -> int:
        """Frames generated when no duration is given (the model's own generation settings)."""

    def frames_for(self, duration: float) -> int:
        """Code frames in ``duration`` seconds: ``round(duration * frame_rate)``, at least 1."""
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
            raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
        frames = round(duration * self.frame_rate)
        if frames < 1:
            raise ValueError(f"duration {duration} s is shorter than one code frame")
        return frames

    def check_ready(self) -> None:
        """Raise ValueError if something needed to generate or score is missing (a processor)."""
        return None

    def prompt_tokens(self, prompts: Sequence[str]) -> tuple[int | None, list[int]]:
        """``(limit, tokens)``: the most prompt tokens the text encoder reads (a longer prompt keeps its
        first ``limit``; None = whole prompts are read) and each prompt's number of tokens ([] when
        there is no limit)."""
        return None, []

    # ---- generation and decoding --------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[str],
        frames: int,
        *,
        seed: int | None = None,
        prefix: torch.Tensor | None = None,
        **sampling: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``frames`` code frames per prompt, without gradient.

        Args:
            prompts: ``B`` text descriptions (repeat a prompt for several samples of it).
            frames: ``S``, code frames per sample.
            seed: seeds torch's RNG for this call (the caller's RNG state is restored after).
            prefix: ``[B, K, S0]`` codes to continue (``S0 < S``); the result starts with them.
            **sampling: the library's own sampling options, passed through.

        Returns:
            ``(audio [B, C, T], codes [B, K, S])``, codes ``long`` on the model's device.
        """
        prompts = check_prompt_list(prompts)
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be a positive int, got {frames!r}")
        start = 0
        if prefix is not None:
            expected = (len(prompts), self.num_codebooks)
            if (
                not isinstance(prefix, torch.Tensor)
                or prefix.dim() != 3
                or tuple(prefix.shape[:2]) != expected
            ):
                raise ValueError(
                    f"prefix must be codes [B={len(prompts)}, K={self.num_codebooks}, S0], "
                    f"got {getattr(prefix, 'shape', type(prefix).__name__)}"
                )
            start = prefix.shape[-1]
        if frames - start < self.min_frames:
            raise ValueError(
                f"frames ({frames}) must exceed the prefix ({start} frames) by at least {self.min_frames} "
                "(the span of the codebook delay pattern)"
            )
        with seeded(seed, self.device), torch.no_grad():
            audio, codes = self._sample(prompts, frames, prefix, sampling)
        return audio, codes.long()

    @abstractmethod
    def _sample(
        self, prompts: list[str], frames: int, prefix: torch.Tensor | None, sampling: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`generate` after its checks, under ``no_grad`` with the RNG seeded."""

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, K, S]`` -> audio ``[B, C, T]`` with the model's codec, without gradient."""

    @abstractmethod
    def code_logits(
        self,
        prompts: Sequence[str],
        codes: torch.Tensor,
        *,
        keep_only_valid_steps: bool = False,
        guidance_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(logits [B, K, S, card], mask [B, K, S] bool)`` of ``codes`` given ``prompts``.

        Differentiable with respect to the model's (adapter) parameters; dropout follows the module's
        train/eval mode; no temperature is applied. ``guidance_scale`` 1: the conditional model's logits
        (one pass); ``> 1``: the classifier-free-guided logits ``uncond + s * (cond - uncond)`` that
        :meth:`generate` with :meth:`policy_sampling`'s ``guidance_scale=s`` samples from (the
        conditional and unconditional passes in one batch, gradient through both).
        """

    @abstractmethod
    def decode_differentiable(
        self, codes: torch.Tensor, logits: torch.Tensor, *, gradient_checkpointing: bool = False
    ) -> torch.Tensor:
        """codes ``[B, K, S]`` -> audio ``[B, C, T]`` whose gradient reaches ``logits [B, K, S, card]``.

        Straight-through decoding (:mod:`deramos_reward.integrations.musicgen.straight_through`): the value is
        that of :meth:`decode` (float rounding only: grad mode may pick other kernels), the gradient
        flows through ``softmax(logits)``, a soft lookup in the codec's codebooks and its decoder.
        ``gradient_checkpointing`` recomputes the codec's activations during backward.
        """

    @abstractmethod
    def policy_sampling(
        self, temperature: float = 1.0, top_k: int = 0, guidance_scale: float = 1.0
    ) -> dict[str, Any]:
        """Sampling options for :meth:`generate` that draw codes from the policy
        ``softmax(code_logits(..., guidance_scale=guidance_scale) / temperature)`` (restricted to the
        ``top_k`` most likely codes when ``top_k > 0``): what on-policy fine-tuning assumes.
        ``guidance_scale`` 1 (default) samples the conditional model without any unconditional pass."""

    def sequence_logprobs(
        self,
        prompts: Sequence[str],
        codes: torch.Tensor,
        *,
        keep_only_valid_steps: bool = False,
        guidance_scale: float = 1.0,
    ) -> SequenceLogProbs:
        """Log-probabilities of ``codes [B, K, S]`` under the delay pattern -> ``SequenceLogProbs``
        ``(logps [B], token_logps [B, K, S], mask [B, K, S])``, with gradient when the model trains
        (of the guided distribution when ``guidance_scale > 1``, see :meth:`code_logits`)."""
        logits, mask = self.code_logits(
            prompts, codes, keep_only_valid_steps=keep_only_valid_steps, guidance_scale=guidance_scale
        )
        return gather_logprobs(logits, codes.to(logits.device).long(), mask)

    # ---- adapters -----------------------------------------------------------------------------
    @abstractmethod
    def trainable_module(self) -> nn.Module:
        """The module a LoRA adapter goes on (or is on): the transformers model, or AudioCraft's LM."""

    @abstractmethod
    def set_trainable_module(self, module: nn.Module) -> None:
        """Make ``module`` (a peft model of :meth:`trainable_module`) the one the backend runs."""

    @abstractmethod
    def lora_target_modules(self) -> str:
        """peft ``target_modules`` regex: the decoder's attention and feed-forward projections."""

    def reference(self) -> contextlib.AbstractContextManager:
        """Within the block the model runs without its peft adapter (the reference policy)."""
        return adapter_disabled(self.trainable_module())
