"""``MusicBackpropConfig``: the settings of reward backpropagation into MusicGen.

Field names follow trl's ``GRPOConfig`` (and :class:`~deramos_reward.integrations.rl_config.MusicRLConfig`)
where they mean the same thing, so the two trainers are configured alike. Our own fields:
``truncate_frames`` (DRaFT-K) and ``gradient_checkpointing`` (through the codec decoder and the reward).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MusicBackpropConfig"]

_SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine")


@dataclass
class MusicBackpropConfig:
    """Reward backpropagation settings. Round-trips through JSON (``to_dict`` / ``from_dict``).

    One step: ``prompts_per_step`` prompts (all processes together) x ``num_generations`` samples of
    ``duration`` seconds from the current policy (no gradient) -> teacher-forced logits of the samples
    (with gradient) -> straight-through decoding -> reward -> ``loss = -mean(reward) + beta * KL`` ->
    one optimizer update (over ``gradient_accumulation_steps`` such micro-batches).
    """

    output_dir: str | None = None
    """Run folder: ``log.jsonl``, ``settings.json``, ``checkpoint/``. None: no files, no resume."""
    learning_rate: float = 1e-4
    num_generations: int = 2
    """Samples per prompt and step (1 is fine here: no group baseline is needed)."""
    beta: float = 0.04
    """Weight of KL(policy || reference) per code (the model with the adapter disabled is the reference)."""
    temperature: float = 1.0
    """Sampling temperature; the straight-through softmax uses the same temperature."""
    top_k: int = 0
    """0 = sample from the full next-code distribution (the one the KL and the softmax describe)."""
    max_steps: int = 100
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    logging_steps: int = 10
    save_steps: int = 500
    seed: int = 42
    bf16: bool | None = None
    """bf16 autocast: None = on CUDA devices that support it, off elsewhere."""
    report_to: str | list[str] = "all"
    """accelerate trackers: ``"all"`` installed ones, ``"none"``, or a list of names."""
    disable_dropout: bool = True
    generation_kwargs: dict[str, Any] | None = None
    """Extra sampling options for the backend's ``generate``, in the MusicGen library's own names."""

    prompts_per_step: int = 4
    """Prompts per step on all processes together (a multiple of the number of processes)."""
    duration: float = 2.0
    """Seconds per sample."""
    truncate_frames: int | None = None
    """DRaFT-K: only the logits of the last ``truncate_frames`` code frames carry the reward's gradient
    (None: all frames). The KL term keeps its gradient everywhere."""
    gradient_checkpointing: bool = False
    """Recompute the codec decoder's and the reward's activations during backward instead of keeping
    them (memory of both passes saved; each runs twice)."""
    eval_steps: int | None = None
    """Score fresh samples for ``eval_prompts`` every this many steps (None: at the start and the end)."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] | None = None
    """None: the backend's ``lora_target_modules()`` (decoder attention and feed-forward layers)."""

    def __post_init__(self) -> None:
        for name in ("learning_rate", "temperature", "duration"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("beta", "max_grad_norm", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        positive = ("num_generations", "max_steps", "gradient_accumulation_steps", "logging_steps")
        for name in (*positive, "save_steps", "prompts_per_step", "lora_r", "lora_alpha"):
            _check_int(self, name, 1)
        for name in ("top_k", "warmup_steps", "seed"):
            _check_int(self, name, 0)
        for name in ("truncate_frames", "eval_steps"):
            if getattr(self, name) is not None:
                _check_int(self, name, 1)
        if self.lr_scheduler_type not in _SCHEDULERS:
            raise ValueError(
                f"lr_scheduler_type must be one of {_SCHEDULERS}, got {self.lr_scheduler_type!r}"
            )
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise TypeError(f"bf16 must be True, False or None, got {self.bf16!r}")
        for name in ("disable_dropout", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.generation_kwargs is not None and not isinstance(self.generation_kwargs, dict):
            raise TypeError(
                f"generation_kwargs must be a dict or None, got {type(self.generation_kwargs).__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MusicBackpropConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown MusicBackpropConfig fields {unknown}")
        return cls(**values)


def _check_int(config: MusicBackpropConfig, name: str, low: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
