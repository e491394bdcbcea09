"""``MusicBackpropConfig``: the settings of reward backpropagation into MusicGen.

Field names follow trl's ``GRPOConfig`` (and :class:`~deramos_reward.integrations.training.rl.config.MusicRLConfig`)
where they mean the same thing, so the two trainers are configured alike: both subclass
:class:`~deramos_reward.integrations.training.common.config.OnlineTrainingConfig`. Our own fields: ``truncate_frames`` (DRaFT-K) and
``gradient_checkpointing`` (through the codec decoder and the reward).
"""

from __future__ import annotations

from dataclasses import dataclass

from deramos_reward.integrations.training.common.config import OnlineTrainingConfig
from deramos_reward.validation import check_bool, check_positive_int

__all__ = ["MusicBackpropConfig"]


@dataclass
class MusicBackpropConfig(OnlineTrainingConfig):
    """Reward backpropagation settings. Round-trips through JSON (``to_dict`` / ``from_dict``).

    One step: ``prompts_per_step`` prompts (all processes together) x ``num_generations`` samples of
    ``duration`` seconds from the current policy (no gradient) -> teacher-forced logits of the samples
    (with gradient) -> straight-through decoding -> reward -> ``loss = -mean(reward) + beta * KL`` ->
    one optimizer update (over ``gradient_accumulation_steps`` such micro-batches). ``beta`` weighs
    KL(policy || reference) per code; the straight-through softmax uses ``temperature``.
    """

    num_generations: int = 2
    """Samples per prompt and step (1 is fine here: no group baseline is needed)."""
    truncate_frames: int | None = None
    """DRaFT-K: only the logits of the last ``truncate_frames`` code frames carry the reward's gradient
    (None: all frames). The KL term keeps its gradient everywhere."""
    gradient_checkpointing: bool = False
    """Recompute the codec decoder's and the reward's activations during backward instead of keeping
    them (memory of both passes saved; each runs twice)."""

    def check_own_fields(self) -> None:
        super().check_own_fields()
        check_positive_int(self.truncate_frames, self.field_name("truncate_frames"), optional=True)
        check_bool(self.gradient_checkpointing, self.field_name("gradient_checkpointing"))
