"""``MusicRLConfig``: the settings of online RL (GRPO / RLOO) for MusicGen with an audio reward.

Fields that mean what trl's ``GRPOConfig`` fields of the same name mean carry trl's names
(:data:`TRL_SHARED_FIELDS`); :meth:`MusicRLConfig.from_trl` copies them from a ``trl.GRPOConfig``.
Defaults differ from trl's where MusicGen or a learned judge call for it:

- ``learning_rate`` 1e-4 (trl: 1e-6 for full fine-tuning; a LoRA adapter takes larger steps);
- ``beta`` 0.04 (trl: 0.0): a learned judge can be over-optimised, so the KL anchor is on by default;
- ``disable_dropout`` True (trl: False): dropout would make the importance ratios noisy;
- ``max_steps`` 100 (trl: -1 = use epochs; RL here is counted in steps only);
- ``num_generations`` 8 and ``loss_type`` ``"dapo"`` as in trl.

Our own fields: ``advantage``, ``prompts_per_step``, ``duration``, the reward shaping fields
(``mi_weight``, ``ta_weight``, ``normalize_per_axis``, ``uncertainty_penalty``, ``diversity_weight``,
``diversity_warning``), ``keep_only_valid_steps``, ``eval_steps`` and the LoRA settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ADVANTAGES", "LOSS_TYPES", "SCALE_REWARDS", "TRL_SHARED_FIELDS", "MusicRLConfig"]

ADVANTAGES = ("grpo", "rloo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
_SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine")

TRL_SHARED_FIELDS = (
    "output_dir",
    "learning_rate",
    "num_generations",
    "beta",
    "epsilon",
    "epsilon_high",
    "num_iterations",
    "loss_type",
    "scale_rewards",
    "temperature",
    "top_k",
    "max_steps",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "weight_decay",
    "warmup_steps",
    "lr_scheduler_type",
    "logging_steps",
    "save_steps",
    "seed",
    "bf16",
    "report_to",
    "disable_dropout",
    "generation_kwargs",
)
"""Fields of :class:`MusicRLConfig` that mean what trl's ``GRPOConfig`` fields of the same name mean."""


@dataclass
class MusicRLConfig:
    """Online RL settings. Round-trips through JSON (``MusicRLConfig(**json.loads(json.dumps(c.to_dict())))``).

    One RL step: ``prompts_per_step`` prompts (all processes together) x ``num_generations`` samples of
    ``duration`` seconds from the current policy -> rewards -> advantages within each prompt's group ->
    ``num_iterations`` optimizer updates on that batch (each over ``gradient_accumulation_steps``
    micro-batches). ``max_steps``, ``logging_steps``, ``save_steps`` and ``eval_steps`` count optimizer
    updates (as in trl); checkpoints are written at the end of the batch in which a multiple of
    ``save_steps`` is reached.
    """

    # ---- trl GRPOConfig names
    output_dir: str | None = None
    learning_rate: float = 1e-4
    num_generations: int = 8
    """Samples per prompt (the group whose rewards give each other's baseline); at least 2."""
    beta: float = 0.04
    """Weight of the per-token k3 KL to the reference policy (the model with the adapter disabled)."""
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
    temperature: float = 1.0
    top_k: int = 0
    """0 = no top-k filtering: samples come from the policy's own distribution, which the importance
    ratios and KL assume (MusicGen usually samples with top-k 250; set it for cleaner audio)."""
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
    """Extra sampling options for the backend's ``generate``, in the MusicGen library's own names
    (transformers: ``guidance_scale``...; AudioCraft: ``cfg_coef``...)."""

    # ---- our own
    advantage: str = "grpo"
    """``grpo``: reward minus the group mean (scaled by ``scale_rewards``); ``rloo``: reward minus the
    mean of the other samples of its group (leave-one-out)."""
    prompts_per_step: int = 4
    """Prompts per RL step on all processes together (a multiple of the number of processes)."""
    duration: float = 2.0
    """Seconds per sample."""
    mi_weight: float = 0.5
    ta_weight: float = 0.5
    normalize_per_axis: bool = True
    """With a reward that has MI and TA parts: standardise each within its group before weighting, so
    neither axis dominates by its scale or spread."""
    uncertainty_penalty: float = 0.0
    """``lam``: each axis counts as ``mean - lam * std`` of the judge's predicted distribution."""
    diversity_weight: float = 0.0
    """Bonus for a sample's mean cosine distance (judge audio embeddings) to the rest of its group."""
    diversity_warning: float = 0.5
    """Warn when a group diversity measure falls below this fraction of its value at the first step
    (0 disables the warning)."""
    keep_only_valid_steps: bool = True
    """Optimise only the codes predicted before codebook 0 ends (the delay pattern's valid steps)."""
    eval_steps: int | None = None
    """Score fresh samples for ``eval_prompts`` every this many steps (None: at the start and the end)."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] | None = None
    """None: the backend's ``lora_target_modules()`` (decoder attention and feed-forward layers)."""

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_numbers(self)
        _check_integers(self)
        _check_flags(self)

    # ---- conversions ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MusicRLConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"a MusicRLConfig JSON must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown MusicRLConfig fields {unknown}")
        return cls(**data)

    @classmethod
    def from_trl(cls, grpo_config: Any, **overrides: Any) -> MusicRLConfig:
        """Take the :data:`TRL_SHARED_FIELDS` from a ``trl.GRPOConfig``; ``overrides`` set any field.

        trl's ``max_steps=-1`` (train by epochs) has no meaning here: pass ``max_steps=...``.
        ``report_to`` as transformers resolved it (a list of installed integrations) is kept;
        an empty list reads as ``"none"``; ``top_k=None`` reads as 0.
        """
        values = {n: getattr(grpo_config, n) for n in TRL_SHARED_FIELDS if hasattr(grpo_config, n)}
        if isinstance(values.get("loss_type"), (list, tuple)) and len(values["loss_type"]) == 1:
            values["loss_type"] = values["loss_type"][0]
        if values.get("report_to") in ([], None):
            values["report_to"] = "none"
        if values.get("top_k") is None:
            values["top_k"] = 0
        if values.get("max_steps", 1) <= 0 and "max_steps" not in overrides:
            raise ValueError(
                f"the trl config has max_steps={values['max_steps']} (train by epochs); "
                "pass max_steps=N to from_trl"
            )
        values.update(overrides)
        return cls(**values)


def _fail(name: str, value: Any, expected: str, error: type[Exception] = ValueError) -> None:
    raise error(f"MusicRLConfig.{name} must be {expected}, got {value!r}")


def _check_choices(c: MusicRLConfig) -> None:
    for name, choices in (
        ("advantage", ADVANTAGES),
        ("loss_type", LOSS_TYPES),
        ("scale_rewards", SCALE_REWARDS),
        ("lr_scheduler_type", _SCHEDULERS),
    ):
        if getattr(c, name) not in choices:
            _fail(name, getattr(c, name), f"one of {choices}")
    if isinstance(c.report_to, list):
        if not all(isinstance(x, str) for x in c.report_to):
            _fail("report_to", c.report_to, '"all", "none" or a list of tracker names', TypeError)
    elif not isinstance(c.report_to, str):
        _fail("report_to", c.report_to, '"all", "none" or a list of tracker names', TypeError)
    t = c.lora_target_modules
    if (
        t is not None
        and not isinstance(t, str)
        and not (isinstance(t, list) and all(isinstance(x, str) for x in t))
    ):
        _fail("lora_target_modules", t, "None, a regex string or a list of module names", TypeError)
    if c.generation_kwargs is not None:
        if not isinstance(c.generation_kwargs, dict) or not all(
            isinstance(k, str) for k in c.generation_kwargs
        ):
            _fail("generation_kwargs", c.generation_kwargs, "None or a dict with string keys", TypeError)
        try:
            json.dumps(c.generation_kwargs)
        except TypeError:
            _fail(
                "generation_kwargs",
                c.generation_kwargs,
                "JSON-serialisable (numbers, strings, lists)",
                TypeError,
            )
        for key in ("temperature", "top_k", "temp"):
            if key in c.generation_kwargs:
                _fail("generation_kwargs", c.generation_kwargs, f"free of {key!r} (use the config field)")
    if c.output_dir is not None and not isinstance(c.output_dir, str):
        _fail("output_dir", c.output_dir, "None or a string path", TypeError)


def _number(c: MusicRLConfig, name: str) -> float:
    v = getattr(c, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(name, v, "a finite number", TypeError)
    return float(v)


def _check_numbers(c: MusicRLConfig) -> None:
    for name in ("learning_rate", "temperature", "duration"):
        if _number(c, name) <= 0:
            _fail(name, getattr(c, name), "> 0")
    for name in ("beta", "max_grad_norm", "weight_decay", "uncertainty_penalty", "diversity_weight"):
        if _number(c, name) < 0:
            _fail(name, getattr(c, name), ">= 0")
    for name in ("mi_weight", "ta_weight"):
        _number(c, name)
    if not 0 < _number(c, "epsilon") < 1:
        _fail("epsilon", c.epsilon, "in (0, 1)")
    if c.epsilon_high is not None and _number(c, "epsilon_high") <= 0:
        _fail("epsilon_high", c.epsilon_high, "None or > 0")
    if not 0 <= _number(c, "diversity_warning") < 1:
        _fail("diversity_warning", c.diversity_warning, "in [0, 1)")
    if not 0 <= _number(c, "lora_dropout") < 1:
        _fail("lora_dropout", c.lora_dropout, "in [0, 1)")
    if c.mi_weight == 0 and c.ta_weight == 0:
        _fail("mi_weight", c.mi_weight, "non-zero when ta_weight is 0 (the reward would be constant)")


def _check_integers(c: MusicRLConfig) -> None:
    minimum = {
        "num_generations": 2,
        "num_iterations": 1,
        "max_steps": 1,
        "gradient_accumulation_steps": 1,
        "logging_steps": 1,
        "save_steps": 1,
        "prompts_per_step": 1,
        "lora_r": 1,
        "lora_alpha": 1,
        "warmup_steps": 0,
        "seed": 0,
        "top_k": 0,
    }
    for name, low in minimum.items():
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            _fail(name, v, f"an int >= {low}")
    if c.eval_steps is not None and (
        isinstance(c.eval_steps, bool) or not isinstance(c.eval_steps, int) or c.eval_steps < 1
    ):
        _fail("eval_steps", c.eval_steps, "None or an int >= 1")


def _check_flags(c: MusicRLConfig) -> None:
    for name in ("normalize_per_axis", "disable_dropout", "keep_only_valid_steps"):
        if not isinstance(getattr(c, name), bool):
            _fail(name, getattr(c, name), "a bool", TypeError)
    if c.bf16 is not None and not isinstance(c.bf16, bool):
        _fail("bf16", c.bf16, "True, False or None (automatic)", TypeError)
