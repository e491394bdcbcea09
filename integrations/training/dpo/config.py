"""``MusicDPOConfig``: the settings of DPO for MusicGen, in trl ``DPOConfig``'s names and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deramos_reward.errors import InputError
from deramos_reward.integrations.training.common.config import (
    TRL_TRAINING_FIELDS,
    AdapterTrainingConfig,
    trl_values,
)
from deramos_reward.integrations.training.dpo.loss import DPO_LOSS_TYPES
from deramos_reward.validation import (
    check_bool,
    check_choice,
    check_number,
    check_positive_float,
    check_positive_int,
)

__all__ = ["TRL_SHARED_FIELDS", "MusicDPOConfig"]

TRL_SHARED_FIELDS = (
    *TRL_TRAINING_FIELDS,
    "beta",
    "loss_type",
    "label_smoothing",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "num_train_epochs",
    "precompute_ref_log_probs",
)
"""Fields of :class:`MusicDPOConfig` that mean what trl's ``DPOConfig`` fields of the same name mean."""


@dataclass
class MusicDPOConfig(AdapterTrainingConfig):
    """DPO settings; the :data:`TRL_SHARED_FIELDS` (the shared ones inherited from
    :class:`~deramos_reward.integrations.training.common.config.AdapterTrainingConfig`) mirror trl's ``DPOConfig``: same names, meanings and
    defaults, except ``learning_rate`` (trl's 1e-6 is for full fine-tuning; a LoRA adapter takes
    1e-4-sized steps).

    Round-trips through JSON (:meth:`to_dict` / ``MusicDPOConfig(**d)``).
    """

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    num_train_epochs: float = 3.0
    max_steps: int = -1
    precompute_ref_log_probs: bool = False
    bf16: bool = False
    # MusicGen-specific
    keep_only_valid_steps: bool = False
    """Score only the codes predicted before codebook 0 ends (AudioCraft's training convention)."""

    def check_own_fields(self) -> None:
        name = self.field_name
        if isinstance(self.loss_type, (list, tuple)):  # trl 1.16 takes a list of losses: normalise it
            if len(self.loss_type) != 1:
                raise InputError(f"{name('loss_type')} must be one loss, got {self.loss_type!r}")
            self.loss_type = self.loss_type[0]
        check_choice(self.loss_type, name("loss_type"), DPO_LOSS_TYPES)
        check_positive_float(self.beta, name("beta"))
        if not 0 <= check_number(self.label_smoothing, name("label_smoothing")) < 0.5:
            raise InputError(f"{name('label_smoothing')} must lie in [0, 0.5), got {self.label_smoothing}")
        if self.loss_type == "ipo" and self.label_smoothing:
            raise InputError("label_smoothing is only used by loss_type='sigmoid'")
        check_positive_float(self.num_train_epochs, name("num_train_epochs"))
        for field in ("per_device_train_batch_size", "per_device_eval_batch_size"):
            check_positive_int(getattr(self, field), name(field))
        if (
            isinstance(self.max_steps, bool)
            or not isinstance(self.max_steps, int)
            or self.max_steps == 0
            or self.max_steps < -1
        ):
            raise InputError(
                f"{name('max_steps')} must be a positive int, or -1 to use num_train_epochs; got {self.max_steps!r}"
            )
        for field in ("bf16", "precompute_ref_log_probs", "keep_only_valid_steps"):
            check_bool(getattr(self, field), name(field))

    @classmethod
    def from_trl(cls, trl_config: Any, **overrides: Any) -> MusicDPOConfig:
        """Take the :data:`TRL_SHARED_FIELDS` from a ``trl.DPOConfig`` (``None`` ``bf16`` reads as False);
        ``overrides`` set any field, the MusicGen-specific ones included."""
        values = trl_values(trl_config, TRL_SHARED_FIELDS)
        values["bf16"] = bool(values.get("bf16") or False)
        values.update(overrides)
        return cls(**values)
