"""The settings every LoRA trainer of MusicGen shares, in trl's names, checked once.

:class:`AdapterTrainingConfig` holds the optimisation, checkpointing and LoRA fields of the DPO, online
RL and reward-backpropagation configs; :class:`OnlineTrainingConfig` adds the sampling fields of the two
trainers that generate their own samples (RL and backprop). Each trainer's config subclasses one of them,
adds its own fields and checks them in ``check_own_fields``. Errors name the config class and the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from deramos_reward.errors import InputError, InputTypeError
from deramos_reward.integrations.training.rl.objective import KL_ESTIMATORS
from deramos_reward.validation import (
    check_bool,
    check_choice,
    check_int,
    check_non_negative_float,
    check_number,
    check_positive_float,
    check_positive_int,
)

__all__ = ["SCHEDULERS", "TRL_TRAINING_FIELDS", "AdapterTrainingConfig", "OnlineTrainingConfig", "trl_values"]

SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine")
"""The ``lr_scheduler_type`` values the trainers support (transformers' scheduler names)."""

TRL_TRAINING_FIELDS = (
    "output_dir",
    "learning_rate",
    "max_steps",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "weight_decay",
    "warmup_steps",
    "lr_scheduler_type",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "report_to",
    "logging_dir",
    "run_name",
    "seed",
    "bf16",
    "disable_dropout",
)
"""Fields of :class:`AdapterTrainingConfig` that mean what trl's ``DPOConfig`` and ``GRPOConfig`` fields
of the same name mean (the LoRA fields are ours)."""

ConfigT = TypeVar("ConfigT", bound="AdapterTrainingConfig")


def trl_values(trl_config: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields ``names`` of a trl config (``DPOConfig``, ``GRPOConfig``) that it has. ``report_to`` as
    transformers resolved it (a list of installed integrations) is kept, an empty list reads as ``"none"``."""
    values = {n: getattr(trl_config, n) for n in names if hasattr(trl_config, n)}
    if values.get("report_to") in ([], None):
        values["report_to"] = "none"
    return values


_SAMPLING_FIELDS = {
    "temperature": "temperature",
    "temp": "temperature",
    "top_k": "top_k",
    "guidance_scale": "guidance_scale",
    "cfg_coef": "guidance_scale",
}
"""Sampling options of the MusicGen libraries that the online configs set through their own fields."""


@dataclass
class AdapterTrainingConfig:
    """Optimiser, schedule, logging, checkpoint and LoRA settings (trl's ``TrainingArguments`` names).

    Round-trips through JSON: ``type(c).from_dict(json.loads(c.to_json())) == c``.
    """

    output_dir: str | None = None
    """Run folder for the log, the settings and resumable checkpoints. None: no files, no resume."""
    learning_rate: float = 1e-4
    """AdamW step size (trl's default 1e-6 is for full fine-tuning; a LoRA adapter takes larger steps)."""
    max_steps: int = 100
    """Optimizer updates to train for."""
    gradient_accumulation_steps: int = 1
    """Micro-batches whose gradients add up to one optimizer update."""
    max_grad_norm: float = 1.0
    """Clip the adapter's gradient to this global L2 norm before each update."""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Updates over which the learning rate ramps up linearly from 0."""
    lr_scheduler_type: str = "linear"
    """The learning rate after warm-up: one of :data:`SCHEDULERS` (transformers' schedules)."""
    logging_steps: int = 10
    """Updates per row of the log."""
    save_steps: int = 500
    """With ``output_dir`` set: write a resumable checkpoint there every this many optimizer steps."""
    save_total_limit: int | None = 1
    """Checkpoints (``checkpoint-<step>`` folders) kept in ``output_dir``, the oldest removed first;
    None keeps all (trl's default; 1 here keeps a run's disk use constant)."""
    report_to: str | list[str] = "none"
    """transformers' reporting integrations fed every log row: ``"none"``, ``"all"`` (every one
    installed), or a list of names (``"tensorboard"``, ``"wandb"``, ...)."""
    logging_dir: str | None = None
    """Where ``report_to="tensorboard"`` writes its event files (None: ``output_dir/runs/<time>``, as
    transformers chooses)."""
    run_name: str | None = None
    """The run's name for the reporting integrations."""
    seed: int = 42
    bf16: bool | None = None
    """bf16 autocast: None = on CUDA devices that support it, off elsewhere."""
    disable_dropout: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] | None = None
    """None: the backend's ``lora_target_modules()`` (decoder attention and feed-forward layers)."""

    def __post_init__(self) -> None:
        self.check_shared_fields()
        self.check_own_fields()

    def field_name(self, name: str) -> str:
        """``"MusicRLConfig.beta"``: how error messages name a field."""
        return f"{type(self).__name__}.{name}"

    def check_shared_fields(self) -> None:
        """Check the fields this class defines (a subclass checks its own in ``check_own_fields``)."""
        name = self.field_name
        if self.output_dir is not None and not isinstance(self.output_dir, str):
            raise InputTypeError(
                f"{name('output_dir')} must be None or a string path, got {self.output_dir!r}"
            )
        check_positive_float(self.learning_rate, name("learning_rate"))
        for field in ("max_grad_norm", "weight_decay"):
            check_non_negative_float(getattr(self, field), name(field))
        for field in ("gradient_accumulation_steps", "logging_steps", "save_steps", "lora_r", "lora_alpha"):
            check_positive_int(getattr(self, field), name(field))
        for field in ("warmup_steps", "seed"):
            check_int(getattr(self, field), name(field), 0)
        check_positive_int(self.save_total_limit, name("save_total_limit"), optional=True)
        for field in ("logging_dir", "run_name"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise InputTypeError(f"{name(field)} must be None or a string, got {value!r}")
        report = self.report_to
        if not (
            isinstance(report, str) or (isinstance(report, list) and all(isinstance(x, str) for x in report))
        ):
            raise InputTypeError(
                f'{name("report_to")} must be "none", "all" or a list of integration names, got {report!r}'
            )
        check_choice(self.lr_scheduler_type, name("lr_scheduler_type"), SCHEDULERS)
        if self.bf16 is not None:
            check_bool(self.bf16, name("bf16"))
        check_bool(self.disable_dropout, name("disable_dropout"))
        if not 0 <= check_non_negative_float(self.lora_dropout, name("lora_dropout")) < 1:
            raise InputError(f"{name('lora_dropout')} must be in [0, 1), got {self.lora_dropout!r}")
        targets = self.lora_target_modules
        if not (
            targets is None
            or isinstance(targets, str)
            or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))
        ):
            raise InputTypeError(
                f"{name('lora_target_modules')} must be None, a regex string or a list of module names, "
                f"got {targets!r}"
            )

    @classmethod
    def runtime_fields(cls) -> tuple[str, ...]:
        """Fields a resumed run may change: they decide what is logged, saved or reported, not what is
        learned (a subclass adds its own)."""
        return ("output_dir", "logging_steps", "save_steps", "save_total_limit", "report_to", "logging_dir",
                "run_name", "eval_steps", "per_device_eval_batch_size")  # fmt: skip

    def check_own_fields(self) -> None:
        """The subclass's checks: ``max_steps`` (whose meaning differs) and the fields it adds."""
        check_positive_int(self.max_steps, self.field_name("max_steps"))

    # ---- conversions ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
        """Build from :meth:`to_dict` output; unknown keys raise ValueError naming them."""
        if not isinstance(values, dict):
            raise InputTypeError(f"a {cls.__name__} must be built from a dict, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"unknown {cls.__name__} fields {unknown}")
        return cls(**values)

    @classmethod
    def from_json(cls: type[ConfigT], text: str) -> ConfigT:
        """Build from :meth:`to_json` output (a JSON object of fields)."""
        return cls.from_dict(json.loads(text))


@dataclass
class OnlineTrainingConfig(AdapterTrainingConfig):
    """Adds the settings of a trainer that samples from its policy (trl ``GRPOConfig`` names where trl has
    them): ``prompts_per_step`` prompts x ``num_generations`` samples of ``duration`` seconds per step."""

    num_generations: int = 8
    """Samples per prompt and step (RL: the group whose rewards give each other's baseline, at least 2)."""
    beta: float = 0.04
    """Weight of the per-token KL(policy || reference) (the reference: the same model, same guidance,
    with the adapter disabled), estimated as ``kl_estimator`` says."""
    kl_estimator: str = "k3"
    """``k3`` (trl's): the one-sample estimate from the sampled codes' log-probabilities (RL computes the
    reference once per batch of samples); ``exact``: the KL of the whole next-code distributions at each
    sampled position (no sampling noise, and its gradient is that of KL(policy || reference), where
    k3's is that of KL(reference || policy); the reference's logits of a micro-batch are computed next
    to the policy's, and both full log-softmaxes are held: more memory on long clips)."""
    guidance_scale: float = 3.0
    """Classifier-free guidance of the policy (transformers' ``guidance_scale``, AudioCraft's
    ``cfg_coef``): samples are drawn from, and log-probabilities, the KL, the entropy and the
    straight-through softmax are computed on, ``softmax((uncond + s * (cond - uncond)) / temperature)``:
    the policy MusicGen is deployed with (3 for the published models), conditional and unconditional
    passes with gradient through both. 1: the unguided conditional model, and no unconditional pass
    runs (half the decoder work)."""
    temperature: float = 1.0
    top_k: int = 0
    """0 = sample from the full next-code distribution (the one the KL and the log-probs describe;
    MusicGen usually samples with top-k 250: set it for cleaner audio at the cost of that match)."""
    generation_kwargs: dict[str, Any] | None = None
    """Extra sampling options for the backend's ``generate``, in the MusicGen library's own names
    (transformers: ``guidance_scale``...; AudioCraft: ``cfg_coef``...)."""
    prompts_per_step: int = 4
    """Prompts per step on all processes together (a multiple of the number of processes)."""
    duration: float = 2.0
    """Seconds per sample."""
    eval_steps: int | None = None
    """Score fresh samples for ``eval_prompts`` every this many steps (None: at the start and the end)."""

    def check_shared_fields(self) -> None:
        super().check_shared_fields()
        name = self.field_name
        check_positive_int(self.num_generations, name("num_generations"))
        check_non_negative_float(self.beta, name("beta"))
        check_choice(self.kl_estimator, name("kl_estimator"), KL_ESTIMATORS)
        scale = check_number(self.guidance_scale, name("guidance_scale"))
        if not 1 <= scale < float("inf"):
            raise InputError(
                f"{name('guidance_scale')} must be a number >= 1 (1 = no classifier-free guidance), "
                f"got {self.guidance_scale!r}"
            )
        for field in ("temperature", "duration"):
            check_positive_float(getattr(self, field), name(field))
        check_int(self.top_k, name("top_k"), 0)
        check_positive_int(self.prompts_per_step, name("prompts_per_step"))
        check_positive_int(self.eval_steps, name("eval_steps"), optional=True)
        self._check_generation_kwargs()

    def _check_generation_kwargs(self) -> None:
        kwargs, name = self.generation_kwargs, self.field_name("generation_kwargs")
        if kwargs is None:
            return
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise InputTypeError(f"{name} must be None or a dict with string keys, got {kwargs!r}")
        try:
            json.dumps(kwargs)
        except TypeError as err:
            raise InputTypeError(
                f"{name} must be JSON-serialisable (numbers, strings, lists), got {kwargs!r}"
            ) from err
        for key, field in _SAMPLING_FIELDS.items():
            if key in kwargs:
                raise InputError(
                    f"{name} must be free of {key!r} (use the config field {field}), got {kwargs!r}"
                )
