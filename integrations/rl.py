"""Online RL (GRPO / RLOO) for MusicGen with an audio reward such as DeRA-MOS.

trl's online trainers sample text from a causal LM, so they cannot drive MusicGen; this package has
its own loop, configured with trl's ``GRPOConfig`` field names::

    from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer

The parts live in small modules re-exported here:

- :mod:`.rl_trainer`: :class:`MusicRLTrainer`, the loop (sampling, scoring, updates, logs, resume);
- :mod:`.rl_config`: :class:`MusicRLConfig`;
- :mod:`.rl_objective`: group advantages (GRPO, RLOO), per-axis reward shaping, the clipped policy
  loss, the policy's per-token distribution and its entropy, and the KL estimators (exact, k3) shared
  with reward backpropagation;
- :mod:`.rl_diversity`: within-group diversity measures, the diversity bonus and the collapse warning;
- :mod:`.reward_function`: :class:`AudioRewardFunction`, DeRA-MOS (or any audio reward) with trl's
  reward-function signature, and :func:`codes_decoder`.
"""

from __future__ import annotations

from .reward_function import AudioRewardFunction, codes_decoder, prompt_text
from .rl_config import TRL_SHARED_FIELDS, MusicRLConfig
from .rl_diversity import (
    DiversityCollapseWarning,
    DiversityGuard,
    code_entropy,
    group_embedding_distance,
    sample_embedding_distance,
)
from .rl_objective import (
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
from .rl_trainer import MusicRLTrainer, Rollout

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
