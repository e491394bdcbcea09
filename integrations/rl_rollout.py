"""The sampling side of online RL: which prompts a step uses, how a reward's output becomes the parts of
the shaped reward, and per-token log-probabilities and entropies from MusicGen's code logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from deramos_reward.reward import RewardOutput, call_reward

from .logprobs import gather_logprobs
from .rl_config import MusicRLConfig
from .rl_diversity import sample_embedding_distance
from .tuning import derive_seed

__all__ = ["RewardParts", "prompt_schedule", "reward_parts", "score_audio", "token_logps"]


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

    ``parts``/``weights``: what :func:`~.rl_objective.shaped_rewards` sums (``mi``, ``ta``, ``diversity``
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


def reward_parts(out: Any, config: MusicRLConfig, group_size: int) -> RewardParts:
    """Reward output (``RewardOutput`` or ``[N]``) -> :class:`RewardParts` under ``config``'s shaping.

    With MI and TA: each axis is its lower confidence bound ``mean - uncertainty_penalty * std``, weighted
    by ``mi_weight`` / ``ta_weight``. With a plain ``[N]`` reward: one part, weight 1. With
    ``diversity_weight > 0``: a ``diversity`` part, each sample's mean cosine distance (judge audio
    embeddings) to the rest of its group.
    """
    logged: dict[str, torch.Tensor] = {}
    embeddings = None
    if isinstance(out, RewardOutput):
        mi, mi_std = _axis(out, "mi", config.uncertainty_penalty)
        ta, ta_std = _axis(out, "ta", config.uncertainty_penalty)
        parts = {"mi": mi, "ta": ta}
        weights = {"mi": config.mi_weight, "ta": config.ta_weight}
        raw = config.mi_weight * mi + config.ta_weight * ta
        logged.update({"rewards/mi": out.mi.float(), "rewards/ta": out.ta.float()})
        if mi_std is not None and ta_std is not None:
            logged.update({"rewards/mi_std": mi_std, "rewards/ta_std": ta_std})
        embeddings = out.audio_embedding
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


def token_logps(
    logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities and entropies of the sampling distribution ``softmax(logits / T)``.

    logits ``[B, K, S, card]``, codes/mask ``[B, K, S]`` -> ``(token_logps [B, K, S] with gradient, 0 where
    masked; entropy [B, K, S] detached)``."""
    scaled = logits.float() / temperature if temperature != 1.0 else logits.float()
    out = gather_logprobs(scaled, codes.to(logits.device).long(), mask)
    with torch.no_grad():  # masked positions may hold nan logits (AudioCraft): zero them first
        kept = torch.where(mask[..., None], scaled.detach(), torch.zeros((), device=scaled.device))
        logp = torch.log_softmax(kept, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1) * mask
    return out.token_logps, entropy


def split(n: int, parts: int) -> list[slice]:
    """``parts`` equal consecutive slices of ``range(n)`` (``n`` a multiple of ``parts``)."""
    size = n // parts
    return [slice(i * size, (i + 1) * size) for i in range(parts)]


def repeat_prompts(prompts: Sequence[str], group_size: int) -> list[str]:
    """Each prompt ``group_size`` times in a row (the sample layout of a step)."""
    return [p for p in prompts for _ in range(group_size)]


__all__ += ["repeat_prompts", "split"]
