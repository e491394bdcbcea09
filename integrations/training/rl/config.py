"""``MusicRLConfig``: the settings of online RL (GRPO / RLOO) for MusicGen with an audio reward.

Fields that mean what trl's ``GRPOConfig`` fields of the same name mean carry trl's names
(:data:`TRL_SHARED_FIELDS`); :meth:`MusicRLConfig.from_trl` copies them from a ``trl.GRPOConfig``.
Defaults differ from trl's where MusicGen or a learned judge call for it:

- ``learning_rate`` 1e-4 (trl: 1e-6 for full fine-tuning; a LoRA adapter takes larger steps);
- ``beta`` 0.04 (trl: 0.0): a learned judge can be over-optimised, so the KL anchor is on by default;
- ``disable_dropout`` True (trl: False): dropout would make the importance ratios noisy;
- ``max_steps`` 100 (trl: -1 = use epochs; RL here is counted in steps only);
- ``num_generations`` 8 and ``loss_type`` ``"dapo"`` as in trl.

Our own fields: ``advantage``, ``prompts_per_step``, ``duration``, ``guidance_scale``,
``kl_estimator``, the reward shaping fields (``normalize_per_axis``, ``uncertainty_penalty``,
``diversity_weight``, ``diversity_warning``), ``keep_only_valid_steps``, ``eval_steps`` and the LoRA
settings. The reward's own weights are used: a ``MusicReward(judge, mi_weight=..., ta_weight=...)`` says
how MI and TA add up, for RL as for reward backpropagation (there are no weight fields here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deramos_reward import validation
from deramos_reward.errors import InputError
from deramos_reward.integrations.training.common.config import (
    TRL_TRAINING_FIELDS,
    OnlineTrainingConfig,
    trl_values,
)

__all__ = ["ADVANTAGES", "LOSS_TYPES", "SCALE_REWARDS", "TRL_SHARED_FIELDS", "MusicRLConfig"]

ADVANTAGES = ("grpo", "rloo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")

TRL_SHARED_FIELDS = (
    *TRL_TRAINING_FIELDS,
    "num_generations",
    "beta",
    "epsilon",
    "epsilon_high",
    "num_iterations",
    "loss_type",
    "scale_rewards",
    "temperature",
    "top_k",
    "generation_kwargs",
)
"""Fields of :class:`MusicRLConfig` that mean what trl's ``GRPOConfig`` fields of the same name mean."""


@dataclass
class MusicRLConfig(OnlineTrainingConfig):
    """Online RL settings. Round-trips through JSON (``MusicRLConfig(**json.loads(json.dumps(c.to_dict())))``).

    One RL step: ``prompts_per_step`` prompts (all processes together) x ``num_generations`` samples of
    ``duration`` seconds from the current policy -> rewards -> advantages within each prompt's group ->
    ``num_iterations`` optimizer updates on that batch (each over ``gradient_accumulation_steps``
    micro-batches). ``max_steps``, ``logging_steps``, ``save_steps`` and ``eval_steps`` count optimizer
    updates (as in trl); checkpoints are written at the end of the batch in which a multiple of
    ``save_steps`` is reached.
    """

    # ---- trl GRPOConfig names beyond the shared ones (see OnlineTrainingConfig)
    epsilon: float = 0.2
    """Clip range of the importance ratio (lower side, and upper side unless ``epsilon_high`` is set)."""
    epsilon_high: float | None = None
    num_iterations: int = 1
    """Optimizer updates per batch of samples (the PPO/GRPO mu); > 1 makes the clipping matter."""
    loss_type: str = "dapo"
    """How token losses are averaged: ``grpo`` (per sequence, then over sequences), ``bnpo`` (over the
    batch's tokens), ``dr_grpo`` (sum / (sequences x tokens per sequence)), ``dapo`` (sum / tokens of the
    whole batch on all processes). MusicGen samples of one batch all have the same number of tokens, so
    ``grpo``, ``bnpo`` and ``dapo`` give the same loss."""
    scale_rewards: str = "group"
    """GRPO advantages: divide by the group's reward std (``group``), the batch's (``batch``) or not (``none``)."""

    # ---- our own
    advantage: str = "grpo"
    """``grpo``: reward minus the group mean (scaled by ``scale_rewards``); ``rloo``: reward minus the
    mean of the other samples of its group (leave-one-out)."""
    normalize_per_axis: bool = True
    """With a reward that has MI and TA parts and weights (a ``MusicReward``): standardise each axis
    within its group before weighting it with the reward's ``mi_weight`` / ``ta_weight``, so neither axis
    dominates by its scale or spread."""
    uncertainty_penalty: float = 0.0
    """``lam``: each axis counts as ``mean - lam * std`` of the judge's predicted distribution, on top of
    the reward's own ``uncertainty_penalty`` (the two add up)."""
    diversity_weight: float = 0.0
    """Bonus for a sample's mean cosine distance (judge audio embeddings) to the rest of its group."""
    diversity_warning: float = 0.5
    """Warn when a group diversity measure falls below this fraction of its value at the first step
    (0 disables the warning)."""
    keep_only_valid_steps: bool = True
    """Optimise only the codes predicted before codebook 0 ends (the delay pattern's valid steps)."""

    def check_own_fields(self) -> None:
        super().check_own_fields()
        _check_choices(self)
        _check_numbers(self)
        _check_flags(self)

    @classmethod
    def from_trl(cls, grpo_config: Any, **overrides: Any) -> MusicRLConfig:
        """Take the :data:`TRL_SHARED_FIELDS` from a ``trl.GRPOConfig``; ``overrides`` set any field.

        trl's ``max_steps=-1`` (train by epochs) has no meaning here: pass ``max_steps=...``.
        ``report_to`` as transformers resolved it (a list of installed integrations) is kept;
        an empty list reads as ``"none"``; ``top_k=None`` reads as 0.
        """
        values = trl_values(grpo_config, TRL_SHARED_FIELDS)
        if isinstance(values.get("loss_type"), (list, tuple)) and len(values["loss_type"]) == 1:
            values["loss_type"] = values["loss_type"][0]
        if values.get("top_k") is None:
            values["top_k"] = 0
        if values.get("max_steps", 1) <= 0 and "max_steps" not in overrides:
            raise ValueError(
                f"the trl config has max_steps={values['max_steps']} (train by epochs); "
                "pass max_steps=N to from_trl"
            )
        values.update(overrides)
        return cls(**values)


def _check_choices(c: MusicRLConfig) -> None:
    for name, choices in (
        ("advantage", ADVANTAGES),
        ("loss_type", LOSS_TYPES),
        ("scale_rewards", SCALE_REWARDS),
    ):
        validation.check_choice(getattr(c, name), c.field_name(name), choices)


def _check_numbers(c: MusicRLConfig) -> None:
    name = c.field_name
    if c.num_generations < 2:
        raise InputError(
            f"{name('num_generations')} must be an int >= 2 (a group), got {c.num_generations!r}"
        )
    validation.check_positive_int(c.num_iterations, name("num_iterations"))
    for field in ("uncertainty_penalty", "diversity_weight"):
        validation.check_non_negative_float(getattr(c, field), name(field))
    if not 0 < validation.check_number(c.epsilon, name("epsilon")) < 1:
        raise InputError(f"{name('epsilon')} must be in (0, 1), got {c.epsilon!r}")
    validation.check_positive_float(c.epsilon_high, name("epsilon_high"), optional=True)
    if not 0 <= validation.check_number(c.diversity_warning, name("diversity_warning")) < 1:
        raise InputError(f"{name('diversity_warning')} must be in [0, 1), got {c.diversity_warning!r}")


def _check_flags(c: MusicRLConfig) -> None:
    for name in ("normalize_per_axis", "keep_only_valid_steps"):
        validation.check_bool(getattr(c, name), c.field_name(name))
