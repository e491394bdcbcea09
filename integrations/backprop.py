"""Reward backpropagation for MusicGen with a LoRA adapter: the reward's gradient flows through the
codec's decoder and a straight-through estimator into the LM's logits::

    from deramos_reward.integrations.backprop import MusicBackpropConfig, MusicRewardBackpropTrainer

The parts live in :mod:`deramos_reward.integrations.training.backprop` and are re-exported here.
"""

from __future__ import annotations

from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
from deramos_reward.integrations.training.backprop.objective import (
    backprop_loss,
    reward_values,
    truncate_gradient,
)
from deramos_reward.integrations.training.backprop.trainer import MusicRewardBackpropTrainer, evaluate_policy

__all__ = [
    "MusicBackpropConfig",
    "MusicRewardBackpropTrainer",
    "backprop_loss",
    "evaluate_policy",
    "reward_values",
    "truncate_gradient",
]
