"""The sampling side of online RL: which prompts a step uses, how the policy samples, and how a reward's
output becomes the parts of the shaped reward (with the reward's own MI/TA weights)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from deramos_reward.integrations.training.rl.config import MusicRLConfig
from deramos_reward.integrations.training.rl.diversity import sample_embedding_distance
from deramos_reward.reward import RewardOutput, call_reward
from deramos_reward.seeding import derive_seed

__all__ = [
    "RewardParts",
    "policy_sampling_options",
    "prompt_schedule",
    "reward_parts",
    "reward_settings",
    "reward_weights",
    "score_audio",
]


def policy_sampling_options(backend: Any, config: Any) -> dict[str, Any]:
    """The ``generate`` options that sample an online config's policy: the backend's
    :meth:`~deramos_reward.integrations.musicgen.base.MusicGenBackend.policy_sampling` at ``config``'s temperature, top-k and
    guidance, plus its ``generation_kwargs`` (other options of the library)."""
    options = backend.policy_sampling(config.temperature, config.top_k, config.guidance_scale)
    return {**options, **(config.generation_kwargs or {})}


def reward_weights(reward: Any) -> tuple[float, float] | None:
    """``(mi_weight, ta_weight)`` of a reward that has them (a ``MusicReward``), else None."""
    mi, ta = getattr(reward, "mi_weight", None), getattr(reward, "ta_weight", None)
    numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in (mi, ta))
    return (float(mi), float(ta)) if numbers else None


def reward_settings(reward: Any) -> dict[str, Any]:
    """What a run records about its reward, so that a resumed run must use the same: the MI/TA weights,
    uncertainty penalty and normalisation of a reward that has them (a ``MusicReward``), else nothing
    (any callable may stand in for another, e.g. a wrapper that logs)."""
    out: dict[str, Any] = {}
    for name in ("mi_weight", "ta_weight", "uncertainty_penalty", "normalize"):
        value = getattr(reward, name, None)
        if isinstance(value, (int, float, str)):
            out[name] = value
    return out


def prompt_schedule(num_prompts: int, per_step: int, batch: int, seed: int) -> list[int]:
    """Indices of the ``per_step`` prompts of RL batch ``batch``: the prompts are visited in a fresh
    random order every epoch (order seeded by ``(seed, epoch)``), ``per_step`` at a time, wrapping into
    the next epoch. Deterministic, so a resumed or multi-process run uses the same prompts."""
    out = []
    for position in range(batch * per_step, (batch + 1) * per_step):
        epoch, index = divmod(position, num_prompts)
        generator = torch.Generator().manual_seed(derive_seed(seed, "prompt-order", epoch))
        out.append(int(torch.randperm(num_prompts, generator=generator)[index]))
    return out


def score_audio(reward: Callable, audio: torch.Tensor, sample_rate: int, prompts: list[str]) -> Any:
    """``reward``'s output for ``audio [B, C, T]`` without gradient: a ``RewardOutput`` (a
    ``MusicReward`` is asked for its parts with ``evaluate``) or a ``[B]`` tensor."""
    with torch.no_grad():
        return call_reward(reward, audio, sample_rate, prompts, parts=True)


@dataclass
class RewardParts:
    """The reward of ``N`` samples, split for shaping.

    ``parts``/``weights``: what :func:`~deramos_reward.integrations.training.rl.objective.shaped_rewards` sums (``mi``, ``ta``, ``diversity``
    or ``reward``); ``raw``: the unnormalised weighted reward (what is logged as ``reward``);
    ``logged``: extra per-sample values to log (``[N]`` each); ``embeddings``: ``[N, D]`` or None."""

    parts: dict[str, torch.Tensor]
    weights: dict[str, float]
    raw: torch.Tensor
    logged: dict[str, torch.Tensor]
    embeddings: torch.Tensor | None


def _axis(out: RewardOutput, axis: str, lam: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    mean = out.mi if axis == "mi" else out.ta
    std = out.mi_std if axis == "mi" else out.ta_std
    if lam and std is None:
        raise ValueError(f"uncertainty_penalty needs the reward's {axis}_std (a RewardOutput without it)")
    return (mean - lam * std if lam else mean).float(), None if std is None else std.float()


def reward_parts(out: Any, config: MusicRLConfig, group_size: int, reward: Any = None) -> RewardParts:
    """Reward output (``RewardOutput`` or ``[N]``) of ``reward`` -> :class:`RewardParts` under ``config``'s
    shaping.

    With MI and TA from a reward that has weights (a ``MusicReward``): each axis is its lower confidence
    bound ``mean - lam * std`` (``lam``: the reward's ``uncertainty_penalty`` plus ``config``'s), weighted
    by the reward's own ``mi_weight`` / ``ta_weight``. A ``RewardOutput`` of a reward without weights:
    its ``reward``, one part (MI and TA are logged). A plain ``[N]`` reward: one part, weight 1. With
    ``diversity_weight > 0``: a ``diversity`` part, each sample's mean cosine distance (judge audio
    embeddings) to the rest of its group.
    """
    logged: dict[str, torch.Tensor] = {}
    embeddings = None
    weighted = reward_weights(reward)
    if isinstance(out, RewardOutput):
        logged.update({"rewards/mi": out.mi.float(), "rewards/ta": out.ta.float()})
        embeddings = out.audio_embedding
    if isinstance(out, RewardOutput) and weighted is not None:
        lam = config.uncertainty_penalty + float(getattr(reward, "uncertainty_penalty", 0.0) or 0.0)
        mi, mi_std = _axis(out, "mi", lam)
        ta, ta_std = _axis(out, "ta", lam)
        parts = {"mi": mi, "ta": ta}
        weights = {"mi": weighted[0], "ta": weighted[1]}
        raw = weighted[0] * mi + weighted[1] * ta
        if mi_std is not None and ta_std is not None:
            logged.update({"rewards/mi_std": mi_std, "rewards/ta_std": ta_std})
    elif isinstance(out, RewardOutput):
        if config.uncertainty_penalty:
            raise ValueError(
                "uncertainty_penalty needs a reward with mi_weight and ta_weight (a MusicReward) to "
                "recombine its axes"
            )
        parts, weights, raw = {"reward": out.reward.float()}, {"reward": 1.0}, out.reward.float()
    else:
        parts, weights, raw = {"reward": out.float()}, {"reward": 1.0}, out.float()
    if config.diversity_weight > 0:
        if embeddings is None:
            raise ValueError(
                "diversity_weight > 0 needs audio embeddings from the reward: use a MusicReward, or return "
                "a RewardOutput with audio_embedding"
            )
        parts["diversity"] = sample_embedding_distance(embeddings, group_size).to(raw.device)
        weights["diversity"] = config.diversity_weight
        logged["rewards/diversity"] = parts["diversity"]
    device = raw.device
    parts = {k: v.to(device) for k, v in parts.items()}
    return RewardParts(parts, weights, raw, {k: v.to(device) for k, v in logged.items()}, embeddings)


def split(n: int, parts: int) -> list[slice]:
    """``parts`` equal consecutive slices of ``range(n)`` (``n`` a multiple of ``parts``)."""
    size = n // parts
    return [slice(i * size, (i + 1) * size) for i in range(parts)]


def repeat_prompts(prompts: Sequence[str], group_size: int) -> list[str]:
    """Each prompt ``group_size`` times in a row (the sample layout of a step)."""
    return [p for p in prompts for _ in range(group_size)]


__all__ += ["repeat_prompts", "split"]
