"""Online RL (GRPO / RLOO) for MusicGen with an audio reward such as DeRA-MOS.

trl's online trainers sample text from a causal LM, so they cannot drive MusicGen; this package has
its own loop, configured with trl's ``GRPOConfig`` field names::

    from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer

The parts live in :mod:`deramos_reward.integrations.training.rl` and are re-exported here:

- ``training/rl/trainer.py``: :class:`MusicRLTrainer`, the loop (sampling, scoring, updates, logs, resume);
- ``training/rl/config.py``: :class:`MusicRLConfig`;
- ``training/rl/objective.py``: group advantages (GRPO, RLOO), per-axis reward shaping, the clipped
  policy loss, the policy's per-token distribution and its entropy, and the KL estimators (exact, k3)
  shared with reward backpropagation;
- ``training/rl/diversity.py``: within-group diversity measures, the diversity bonus and the collapse
  warning;
- ``rewards/function.py``: :class:`AudioRewardFunction`, DeRA-MOS (or any audio reward) with trl's
  reward-function signature, and :func:`codes_decoder`.
"""

from __future__ import annotations

from deramos_reward.integrations.rewards.function import AudioRewardFunction, codes_decoder, prompt_text
from deramos_reward.integrations.training.rl.config import TRL_SHARED_FIELDS, MusicRLConfig
from deramos_reward.integrations.training.rl.diversity import (
    DiversityCollapseWarning,
    DiversityGuard,
    code_entropy,
    group_embedding_distance,
    sample_embedding_distance,
)
from deramos_reward.integrations.training.rl.objective import (
    KL_ESTIMATORS,
    PolicyLoss,
    PolicyTokens,
    clipped_policy_loss,
    exact_kl,
    group_advantages,
    grpo_advantages,
    k3_kl,
    policy_tokens,
    rloo_advantages,
    shaped_rewards,
    standardize_within_groups,
    token_entropy,
    token_kl,
)
from deramos_reward.integrations.training.rl.trainer import MusicRLTrainer, Rollout

__all__ = [
    "KL_ESTIMATORS",
    "PolicyTokens",
    "exact_kl",
    "policy_tokens",
    "token_entropy",
    "token_kl",
    "TRL_SHARED_FIELDS",
    "AudioRewardFunction",
    "DiversityCollapseWarning",
    "DiversityGuard",
    "MusicRLConfig",
    "MusicRLTrainer",
    "Rollout",
    "PolicyLoss",
    "clipped_policy_loss",
    "code_entropy",
    "codes_decoder",
    "group_advantages",
    "group_embedding_distance",
    "grpo_advantages",
    "k3_kl",
    "prompt_text",
    "rloo_advantages",
    "sample_embedding_distance",
    "shaped_rewards",
    "standardize_within_groups",
]
