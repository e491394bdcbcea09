"""DeRA-MOS (or any audio reward) as a reward function with trl's signature, for online RL (also
importable from ``deramos_reward.integrations.rl``).

trl's online trainers (``GRPOTrainer(reward_funcs=...)``, ``RLOOTrainer``) call each reward function as
``reward_fn(prompts=..., completions=..., completion_ids=..., **columns) -> list[float]`` and log it under
its ``__name__``. :class:`AudioRewardFunction` has that signature; its completions are audio, or codes
that a decoder turns into audio, so the same object drops into trl and into hand-written RL loops::

    fn = AudioRewardFunction(dr.MusicReward(judge), decoder=musicgen)   # completions: codes [K, S]
    fn(prompts=["calm piano"] * 4, completions=list(codes))             # -> [r0, r1, r2, r3]

Scoring runs under ``torch.no_grad`` (RL needs the values, not gradients through the judge).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from deramos_reward.integrations.musicgen.factory import maybe_musicgen_backend
from deramos_reward.reward import call_reward
from deramos_reward.validation import check_sample_rate

__all__ = ["AudioRewardFunction", "codes_decoder", "prompt_text"]

Decoder = Callable[[torch.Tensor], torch.Tensor]


def codes_decoder(decoder: Any) -> tuple[Decoder, int | None]:
    """A codes -> audio function and its sample rate (None when unknown) from a model or a callable.

    Accepts a MusicGen backend or model of either library (decodes with its codec, see
    :func:`~deramos_reward.integrations.musicgen.factory.musicgen_backend`), or any callable
    ``codes [B, K, S] -> audio [B, C, T]``.
    """
    backend = maybe_musicgen_backend(decoder)
    if backend is not None:
        return backend.decode, backend.sample_rate
    if callable(decoder):
        return decoder, None
    raise TypeError(
        "decoder must be a transformers MusicGen, an AudioCraft MusicGen or a callable codes -> audio, "
        f"got {type(decoder).__name__}"
    )


def prompt_text(prompt: Any, index: int = 0) -> str:
    """A prompt as text: a string as is; a conversational prompt (list of ``{"role", "content"}``
    messages, as trl passes them) as the content of its last user message."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, dict) for m in prompt):
        users = [m for m in prompt if m.get("role") == "user"] or list(prompt)
        content = users[-1].get("content")
        if isinstance(content, str):
            return content
    raise TypeError(
        f"prompts[{index}] must be a string or a list of chat messages with string content, "
        f"got {type(prompt).__name__}"
    )


def _as_tensor(item: Any, index: int) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item.detach()
    if isinstance(item, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(item))
    if isinstance(item, (list, tuple)):
        return torch.as_tensor(item)
    raise TypeError(
        f"completions[{index}] must be a tensor, a numpy array or a dict with 'array' and 'sampling_rate', "
        f"got {type(item).__name__}"
    )


class AudioRewardFunction:
    """A trl-style reward function: ``fn(prompts, completions, **kwargs) -> list[float]``.

    Args:
        reward: a :class:`~deramos_reward.MusicReward`, or any ``reward(audio [B, C, T], sample_rate, prompts)
            -> [B]`` (e.g. a hand-written reward of the audio).
        sample_rate: rate of audio completions in Hz. May also come per call (``sample_rate=`` keyword, an int
            or one per completion), from dict completions (``{"array": ..., "sampling_rate": ...}``, the
            ``datasets.Audio`` layout), or from ``decoder``.
        decoder: when given, completions are codes ``[K, S]`` (or one ``[B, K, S]`` tensor) and are decoded
            to audio first: a transformers or AudioCraft MusicGen, or a callable ``codes [B, K, S] -> audio
            [B, C, T]`` (see :func:`codes_decoder`).
        batch_size: completions per reward call.
        name: the function's ``__name__`` (trl logs each reward under it).

    Completions: ``[T]`` / ``[C, T]`` float tensors or arrays, dicts as above, or a ``[B, T]`` / ``[B, C, T]``
    tensor; with a decoder, integer codes. Clips of different lengths or rates are scored in separate
    calls, so a reward that needs equal lengths still works. Extra keywords that trl passes
    (``completion_ids``, ``trainer_state``, dataset columns...) are accepted and ignored.

    Returns one float per completion, in order.
    """

    def __init__(
        self,
        reward: Callable,
        sample_rate: int | None = None,
        decoder: Any = None,
        *,
        batch_size: int = 16,
        name: str = "deramos_reward",
    ):
        if not callable(reward):
            raise TypeError(
                f"reward must be callable (a MusicReward or reward(audio, sr, prompts)), got {type(reward).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"name must be an identifier-like string (trl logs rewards by name), got {name!r}"
            )
        self.reward = reward
        self.decode: Decoder | None = None
        decoder_rate = None
        if decoder is not None:
            self.decode, decoder_rate = codes_decoder(decoder)
        self.sample_rate = check_sample_rate(sample_rate) if sample_rate is not None else decoder_rate
        self.batch_size = batch_size
        self.__name__ = name

    def __repr__(self) -> str:
        return f"AudioRewardFunction(name={self.__name__!r}, sample_rate={self.sample_rate}, decodes={self.decode is not None})"

    # ---- inputs -> clips ---------------------------------------------------------------------
    def _rates(self, count: int, sample_rate: Any) -> list[int | None]:
        if sample_rate is None:
            return [self.sample_rate] * count
        if isinstance(sample_rate, (list, tuple, np.ndarray, torch.Tensor)):
            rates = list(np.asarray(sample_rate).reshape(-1))
            if len(rates) != count:
                raise ValueError(f"sample_rate has {len(rates)} entries for {count} completions")
            return [check_sample_rate(r) for r in rates]
        return [check_sample_rate(sample_rate)] * count

    def _audio_items(self, completions: Any, rates: list[int | None]) -> list[tuple[torch.Tensor, int]]:
        clips = []
        for i, item in enumerate(completions):
            rate = rates[i]
            if isinstance(item, dict):
                if "array" not in item or "sampling_rate" not in item:
                    raise ValueError(f"completions[{i}] is a dict without 'array' and 'sampling_rate'")
                rate = check_sample_rate(item["sampling_rate"], name=f"completions[{i}]['sampling_rate']")
                item = item["array"]
            wave = _as_tensor(item, i)
            if not wave.is_floating_point():
                raise TypeError(
                    f"completions[{i}] holds {wave.dtype} values; audio must be floating point "
                    "(for codes, pass decoder=...)"
                )
            if wave.dim() not in (1, 2):
                raise ValueError(
                    f"completions[{i}] must be audio [T] or [C, T], got shape {tuple(wave.shape)}"
                )
            if rate is None:
                raise ValueError(
                    "sample_rate is unknown: pass sample_rate= to AudioRewardFunction or to the call, "
                    "or give completions as {'array', 'sampling_rate'} dicts"
                )
            clips.append((wave if wave.dim() == 2 else wave[None], rate))
        return clips

    def _decoded_items(self, completions: Any) -> list[tuple[torch.Tensor, int]]:
        codes = [_as_tensor(item, i) for i, item in enumerate(completions)]
        for i, c in enumerate(codes):
            if c.is_floating_point() or c.dtype == torch.bool or c.dim() != 2:
                raise TypeError(
                    f"completions[{i}] must be integer codes [K, S] when a decoder is set, "
                    f"got {c.dtype} of shape {tuple(c.shape)}"
                )
        if self.sample_rate is None:
            raise ValueError("sample_rate is unknown: pass sample_rate= with a callable decoder")
        clips: list[tuple[torch.Tensor, int] | None] = [None] * len(codes)
        for idx in self._groups([c.shape for c in codes]):
            batch = torch.stack([codes[i] for i in idx]).long()
            with torch.no_grad():
                audio = self.decode(batch)
            if not isinstance(audio, torch.Tensor) or audio.shape[0] != len(idx) or audio.dim() not in (2, 3):
                raise ValueError(
                    f"decoder must return audio [B, C, T] or [B, T] for B={len(idx)} codes, "
                    f"got {getattr(audio, 'shape', type(audio).__name__)}"
                )
            for j, i in enumerate(idx):
                clips[i] = (audio[j] if audio.dim() == 3 else audio[j][None], self.sample_rate)
        return clips  # type: ignore[return-value]

    def _groups(self, keys: list[Any]) -> list[list[int]]:
        """Indices grouped by key (first-seen order), each group cut into chunks of ``batch_size``."""
        groups: dict[Any, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        return [
            idx[s : s + self.batch_size]
            for idx in groups.values()
            for s in range(0, len(idx), self.batch_size)
        ]

    # ---- call --------------------------------------------------------------------------------
    def __call__(
        self, prompts: Sequence[Any], completions: Any, sample_rate: Any = None, **kwargs: Any
    ) -> list[float]:
        """Score ``completions`` against ``prompts`` -> ``len(completions)`` floats (see the class doc)."""
        if isinstance(completions, (torch.Tensor, np.ndarray)):
            completions = list(completions)
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a list (one per completion), got {type(prompts).__name__}")
        if not isinstance(completions, Sequence):
            raise TypeError(f"completions must be a list (one per prompt), got {type(completions).__name__}")
        if len(prompts) != len(completions):
            raise ValueError(
                f"got {len(prompts)} prompts for {len(completions)} completions; expected one each"
            )
        if not completions:
            return []
        texts = [prompt_text(p, i) for i, p in enumerate(prompts)]
        if self.decode is not None:
            if sample_rate is not None:
                raise ValueError("sample_rate comes from the decoder; do not pass it with codes")
            clips = self._decoded_items(completions)
        else:
            clips = self._audio_items(completions, self._rates(len(completions), sample_rate))
        values = [0.0] * len(clips)
        for idx in self._groups([(tuple(w.shape), r) for w, r in clips]):
            audio = torch.stack([clips[i][0] for i in idx])
            with torch.no_grad():
                scores = call_reward(self.reward, audio, clips[idx[0]][1], [texts[i] for i in idx])
            for i, v in zip(idx, scores.double().cpu().tolist()):
                values[i] = float(v)
        return values
