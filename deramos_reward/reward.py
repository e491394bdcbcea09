"""``MusicReward``: a frozen DeRA-MOS as a differentiable reward, one scalar per clip.

``reward(audio, sample_rate, prompts) -> [B]`` is differentiable with respect to ``audio``:
downmix, resampling, the MuQ front-end (mel, dB, normalisation), the encoders and the heads are
all torch ops, with no ``no_grad`` and no numpy on the path. The scorer itself never trains: all
of its parameters have ``requires_grad=False`` and it stays in eval mode (no dropout), so
gradients reach the audio (and whatever generated it) and nothing else.

The reward of a clip is ``mi_weight * MI + ta_weight * TA`` (the *raw* reward), then optionally
normalised. The judge predicts a 20-bin distribution per axis; its standard deviation (``mi_std``,
``ta_std``) is the judge's uncertainty. With ``uncertainty_penalty=lam`` each axis enters the raw
reward as a lower confidence bound, ``MI - lam * mi_std`` (and the same for TA), so clips the judge
is unsure about (where an optimiser is most likely to find ratings the judge gets wrong) score lower.
Normalisations:

- ``"none"``: the raw reward (with weights 0.5/0.5 it is a MOS on 1-5);
- ``"zscore"``: ``(raw - mean) / std`` with stored statistics (``set_stats`` or ``calibrate``);
- ``"rank"``: the rank of the clip within its group (same prompt, or ``group_ids``), scaled to
  [0, 1] (ties share their mean rank; a group of one gets 0.5). Ranks are piecewise constant,
  so this mode is **not differentiable**: its output carries no gradient. Use it for
  reranking and RL advantages, not for gradient ascent.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .encoders.base import TextTokens, freeze
from .frontend import to_clips
from .model import DeRAMOS
from .prompt_cache import PromptCache
from .validation import (
    check_bool,
    check_choice,
    check_non_negative_float,
    check_number,
    check_positive_float,
    check_positive_int,
    check_prompts,
)

NORMALIZATIONS = ("none", "zscore", "rank")


@dataclass
class RewardOutput:
    """Reward and its parts for B clips (all [B], in input order)."""

    reward: torch.Tensor  # normalised reward (what ``MusicReward.forward`` returns)
    raw: torch.Tensor  # mi_weight * (mi - lam * mi_std) + ta_weight * (ta - lam * ta_std)
    mi: torch.Tensor  # expected MI, 1-5
    ta: torch.Tensor  # expected TA, 1-5
    mi_std: torch.Tensor | None = None  # standard deviation of the predicted MI distribution
    ta_std: torch.Tensor | None = None  # standard deviation of the predicted TA distribution
    audio_embedding: torch.Tensor | None = None  # [B, D] the judge's pre-fusion audio embedding


def describe_reward(
    mi_weight: float, ta_weight: float, normalize: str = "none", stats: Mapping[str, float] | None = None
) -> dict[str, object]:
    """What a reward value means, for logs and saved results (JSON-ready).

    Returns ``{"mi_weight", "ta_weight", "normalize", "stats", "formula", "range", "text"}``:
    ``formula`` in words, ``range`` ``[low, high]`` (None for z-scores), ``text`` a one-line summary
    such as ``"0.5*MI + 0.5*TA, not normalised: a MOS on 1-5"``.
    """
    raw = f"{mi_weight:g}*MI + {ta_weight:g}*TA"
    ends = [mi_weight * m + ta_weight * t for m in (1.0, 5.0) for t in (1.0, 5.0)]
    if normalize == "none":
        formula, value_range = raw, [min(ends), max(ends)]
        mos = mi_weight >= 0 and ta_weight >= 0 and math.isclose(mi_weight + ta_weight, 1.0)
        text = f"{raw}, not normalised: " + ("a MOS on 1-5" if mos else f"{min(ends):g} to {max(ends):g}")
    elif normalize == "zscore":
        mean, std = (stats or {}).get("mean"), (stats or {}).get("std")
        formula = f"({raw} - {mean:g}) / {std:g}" if stats else f"({raw} - mean) / std"
        value_range, text = None, f"z-score of {raw}" + (f" (mean {mean:g}, std {std:g})" if stats else "")
    else:
        formula = f"rank of {raw} within its prompt's group, scaled to [0, 1]"
        value_range, text = [0.0, 1.0], formula
    return {
        "mi_weight": mi_weight,
        "ta_weight": ta_weight,
        "normalize": normalize,
        "stats": None if stats is None else dict(stats),
        "formula": formula,
        "range": value_range,
        "text": text,
    }


def rank_within_groups(values: torch.Tensor, groups: Sequence[Hashable]) -> torch.Tensor:
    """Rank of each value inside its group, scaled to [0, 1] (no gradient).

    Args:
        values: [B] scores.
        groups: B hashable group labels.
    Returns:
        [B] in [0, 1]: 0 = lowest of its group, 1 = highest; ties get their mean rank; a group
        with one member gets 0.5.
    """
    if len(groups) != values.shape[0]:
        raise ValueError(f"group_ids has {len(groups)} entries for {values.shape[0]} clips")
    values = values.detach()
    out = torch.empty_like(values)
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        index = torch.tensor(idx, device=values.device)
        v = values.index_select(0, index)
        if len(idx) == 1:
            out[index] = 0.5
            continue
        below = (v[:, None] > v[None, :]).sum(1).to(v.dtype)
        ties = (v[:, None] == v[None, :]).sum(1).to(v.dtype) - 1
        out[index] = (below + 0.5 * ties) / (len(idx) - 1)
    return out


class MusicReward(nn.Module):
    """A frozen DeRA-MOS turned into a reward: ``reward(audio, sample_rate, prompts) -> [B]``.

    Args:
        model: the DeRA-MOS scorer. It is frozen in place once, here (``requires_grad_(False)``,
            eval mode); ``reward.train()`` keeps it in eval mode and ``reward.requires_grad_(True)``
            is refused. Calls do not freeze it again: unfreezing ``reward.model`` yourself
            afterwards lets gradients into the scorer.
        mi_weight, ta_weight: weights of MI and TA in the raw reward. The defaults (0.5, 0.5) make the
            raw reward the mean of MI and TA, itself a MOS on the judges' 1-5 scale.
        normalize: ``"none"``, ``"zscore"`` or ``"rank"`` (see the module docstring).
        stats: z-score statistics, ``{"mean": m, "std": s}`` or ``(m, s)``; or call
            ``set_stats`` / ``calibrate`` later.
        chunk_size: clips per scorer forward pass, so memory stays bounded for large batches.
        gradient_checkpointing: when gradients are needed, keep only each chunk's input and
            recompute its activations during backward (memory ~ one chunk instead of the batch).
        prompt_cache_size: prompts whose text-encoder states are kept across calls.
        uncertainty_penalty: ``lam >= 0``; each axis counts as ``mean - lam * std`` of its predicted
            distribution (a lower confidence bound). 0 (default) uses the expected scores.
    """

    def __init__(
        self,
        model: DeRAMOS,
        mi_weight: float = 0.5,
        ta_weight: float = 0.5,
        normalize: str = "none",
        stats: Mapping[str, float] | Sequence[float] | None = None,
        chunk_size: int = 8,
        gradient_checkpointing: bool = False,
        prompt_cache_size: int = 4096,
        uncertainty_penalty: float = 0.0,
    ):
        super().__init__()
        if not isinstance(model, DeRAMOS):
            raise TypeError(f"model must be a deramos_reward.DeRAMOS, got {type(model).__name__}")
        self.model = model
        self.mi_weight = check_number(mi_weight, "mi_weight")
        self.ta_weight = check_number(ta_weight, "ta_weight")
        self.uncertainty_penalty = check_non_negative_float(uncertainty_penalty, "uncertainty_penalty")
        self.normalize = check_choice(normalize, "normalize", NORMALIZATIONS)
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.gradient_checkpointing = check_bool(gradient_checkpointing, "gradient_checkpointing")
        self.prompt_cache = PromptCache(
            model.text_encoder, check_positive_int(prompt_cache_size, "prompt_cache_size")
        )
        self._mean: float | None = None
        self._std: float | None = None
        if stats is not None:
            if isinstance(stats, Mapping):
                missing = {"mean", "std"} - set(stats)
                if missing:
                    raise ValueError(f"stats must have keys 'mean' and 'std', missing {sorted(missing)}")
                self.set_stats(stats["mean"], stats["std"])
            elif isinstance(stats, Sequence) and len(stats) == 2:
                self.set_stats(*stats)
            else:
                raise TypeError(f"stats must be {{'mean': m, 'std': s}} or (mean, std), got {stats!r}")
        freeze(model)  # here, after the checks: a rejected call leaves the model as it was

    # ---- state --------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The scorer's rate; audio at any other rate is resampled (differentiably)."""
        return self.model.sample_rate

    @property
    def stats(self) -> dict[str, float] | None:
        """The z-score statistics, or None when not set."""
        return None if self._mean is None else {"mean": self._mean, "std": self._std}

    def set_stats(self, mean: float, std: float) -> None:
        """Set the mean and standard deviation of the raw reward used by ``normalize="zscore"``."""
        mean, std = check_number(mean, "mean"), check_positive_float(std, "std")
        self._mean, self._std = mean, std

    def train(self, mode: bool = True) -> MusicReward:
        """The scorer stays in eval mode whatever ``mode`` is (no dropout in a reward)."""
        super().train(mode)
        self.model.eval()
        return self

    def requires_grad_(self, requires_grad: bool = True) -> MusicReward:
        if requires_grad:
            raise ValueError(
                "MusicReward keeps its scorer frozen; to fine-tune DeRA-MOS train the DeRAMOS model itself"
            )
        return super().requires_grad_(False)

    def _apply(self, fn, *args, **kwargs):
        self.prompt_cache.clear()  # cached states live on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    def describe(self) -> dict[str, object]:
        """What this reward's values mean: weights, normalisation, formula, range (see ``describe_reward``)."""
        return describe_reward(self.mi_weight, self.ta_weight, self.normalize, self.stats)

    def extra_repr(self) -> str:
        return (
            f"mi_weight={self.mi_weight}, ta_weight={self.ta_weight}, normalize={self.normalize!r}, "
            f"stats={self.stats}, chunk_size={self.chunk_size}, uncertainty_penalty={self.uncertainty_penalty}"
        )

    # ---- scoring ------------------------------------------------------------------------
    def _text(self, prompts: list[str]) -> TextTokens:
        device = self.model.device
        # Prompt states are computed once in full precision, whatever autocast is active.
        with torch.autocast(device.type, enabled=False):
            return self.prompt_cache.get(prompts, device)

    def _score_chunk(self, waves: list[torch.Tensor], prompts: list[str]) -> torch.Tensor:
        """Mono clips at the scorer rate -> [len, 4 + D]: MI, TA, MI std, TA std, audio embedding."""
        text = self._text(prompts)
        device = self.model.device
        waves = [w.to(device) for w in waves]

        def run(*ws: torch.Tensor) -> torch.Tensor:
            out = self.model.forward_clips(list(ws), text)
            scores = torch.stack([out.mi, out.ta, out.mi_std, out.ta_std], dim=-1)
            return torch.cat([scores, out.audio_embedding.to(scores.dtype)], dim=-1)

        needs_grad = torch.is_grad_enabled() and any(w.requires_grad for w in waves)
        if self.gradient_checkpointing and needs_grad:
            return checkpoint(run, *waves, use_reentrant=False)
        return run(*waves)

    def _parts(
        self, audio: object, sample_rate: int | None, prompts: str | Sequence[str]
    ) -> tuple[torch.Tensor, list[str]]:
        """-> (parts [B, 4 + D] as in ``_score_chunk``, prompts as a list of B strings)."""
        if isinstance(audio, torch.Tensor) and audio.dim() in (2, 3):
            # Clip by clip, so a clip's resampled samples never depend on the rest of the batch.
            waves = [
                w
                for i in range(audio.shape[0])
                for w in to_clips(audio[i : i + 1], sample_rate, self.model.sample_rate).waves
            ]
            if not waves:
                raise ValueError("audio holds no clips (batch size 0)")
        else:
            waves = to_clips(audio, sample_rate, self.model.sample_rate).waves
        if isinstance(prompts, str):
            prompts = [prompts] * len(waves)
        prompts = check_prompts(prompts, len(waves), name="prompts")
        # Equal lengths next to each other so they share encoder passes; order restored below.
        order = sorted(range(len(waves)), key=lambda i: waves[i].shape[-1])
        parts = []
        for start in range(0, len(order), self.chunk_size):
            idx = order[start : start + self.chunk_size]
            parts.append(self._score_chunk([waves[i] for i in idx], [prompts[i] for i in idx]))
        scores = torch.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return scores.index_select(0, inverse.to(scores.device)), prompts

    def _raw(self, parts: torch.Tensor) -> torch.Tensor:
        """parts [B, 4 + D] -> raw reward [B] (weighted lower confidence bounds)."""
        lam = self.uncertainty_penalty
        mi, ta = parts[:, 0], parts[:, 1]
        if lam:
            mi, ta = mi - lam * parts[:, 2], ta - lam * parts[:, 3]
        return self.mi_weight * mi + self.ta_weight * ta

    def evaluate(
        self,
        audio: object,
        sample_rate: int | None,
        prompts: str | Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
    ) -> RewardOutput:
        """Reward and its parts.

        Args:
            audio: [B, T] or [B, C, T] tensor (differentiable), [T] for one clip, a numpy array,
                or a list of clips ([T] / [C, T] tensors or file paths) of different lengths.
            sample_rate: rate of ``audio`` in Hz (files carry their own; may then be None).
            prompts: one prompt per clip; a single string is used for every clip.
            group_ids: B group labels for ``normalize="rank"`` (default: the prompt text).
        Returns:
            RewardOutput with ``reward``, ``raw``, ``mi``, ``ta``, ``mi_std``, ``ta_std``, each [B]
            float32 (float64 for a float64 scorer), and ``audio_embedding`` [B, D], on the scorer's
            device.
        """
        if self.normalize == "zscore" and self._mean is None:
            raise ValueError(
                'normalize="zscore" needs statistics: pass stats=..., call set_stats(mean, std) '
                "or calibrate(audio, sample_rate, prompts) first"
            )
        if isinstance(group_ids, torch.Tensor):
            group_ids = group_ids.tolist()
        if group_ids is not None and not isinstance(group_ids, Sequence):
            raise TypeError(
                f"group_ids must be a sequence of hashable labels, got {type(group_ids).__name__}"
            )
        parts, prompts = self._parts(audio, sample_rate, prompts)
        if group_ids is not None and len(group_ids) != len(prompts):
            raise ValueError(f"group_ids has {len(group_ids)} entries for {len(prompts)} clips")
        raw = self._raw(parts)
        if self.normalize == "zscore":
            reward = (raw - self._mean) / self._std
        elif self.normalize == "rank":
            reward = rank_within_groups(raw, list(group_ids) if group_ids is not None else prompts)
        else:
            reward = raw
        return RewardOutput(
            reward=reward,
            raw=raw,
            mi=parts[:, 0],
            ta=parts[:, 1],
            mi_std=parts[:, 2],
            ta_std=parts[:, 3],
            audio_embedding=parts[:, 4:],
        )

    def forward(
        self,
        audio: object,
        sample_rate: int | None,
        prompts: str | Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
    ) -> torch.Tensor:
        """audio [B, T] / [B, C, T] at ``sample_rate`` + B prompts -> reward [B] (see ``evaluate``)."""
        return self.evaluate(audio, sample_rate, prompts, group_ids).reward

    @torch.no_grad()
    def calibrate(
        self, audio: object, sample_rate: int | None, prompts: str | Sequence[str]
    ) -> dict[str, float]:
        """Set the z-score statistics from the raw reward of a sample of clips (at least 2).

        Returns ``{"mean": m, "std": s}`` (std with Bessel's correction).
        """
        raw = self._raw(self._parts(audio, sample_rate, prompts)[0]).double()
        if raw.numel() < 2:
            raise ValueError(f"calibrate needs at least 2 clips, got {raw.numel()}")
        mean, std = float(raw.mean()), float(raw.std())
        if not std > 0:
            raise ValueError("calibration clips all have the same raw reward (std 0); use more varied audio")
        self.set_stats(mean, std)
        return {"mean": mean, "std": std}


def call_reward(
    reward: object,
    audio: torch.Tensor,
    sample_rate: int,
    prompts: Sequence[str],
    *,
    parts: bool = False,
    group_ids: Sequence[Hashable] | None = None,
) -> torch.Tensor | RewardOutput:
    """Call a reward the way every loop of the package does: ``audio [B, C, T]`` (or ``[B, T]``) -> ``[B]``.

    ``reward`` is a :class:`MusicReward` or any callable ``(audio, sample_rate, prompts) -> [B]`` (or
    ``-> RewardOutput``). With ``parts=True`` the result is a :class:`RewardOutput` whenever the reward
    has one (a ``MusicReward`` is asked with ``evaluate``, with ``group_ids`` for ``normalize="rank"``)
    and the ``[B]`` tensor otherwise; with ``parts=False`` it is always the ``[B]`` reward. Gradients
    flow as the caller's grad mode allows (wrap the call in ``torch.no_grad()`` to score only).

    Raises:
        ValueError: a plain reward returned other than one value per clip (``[B]`` or ``[B, 1]``), or
            nan/inf.
    """
    count = int(audio.shape[0])
    prompts = list(prompts)
    if isinstance(reward, MusicReward):
        out: object = reward.evaluate(audio, sample_rate, prompts, group_ids=group_ids)
    else:
        out = reward(audio, sample_rate, prompts)
    if isinstance(out, RewardOutput):
        return out if parts else out.reward
    values = out if isinstance(out, torch.Tensor) else torch.as_tensor(out, device=audio.device)
    if values.numel() != count:
        raise ValueError(
            f"reward returned {values.numel()} values (shape {tuple(values.shape)}) for {count} clips: "
            "a reward must return one value per clip"
        )
    values = values.reshape(count)
    if not values.is_floating_point():
        values = values.float()
    if not bool(torch.isfinite(values.detach()).all()):
        raise ValueError("reward returned non-finite values (nan or inf)")
    return values
