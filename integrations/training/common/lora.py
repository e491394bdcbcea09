"""LoRA adapters on a MusicGen backend: the policy every fine-tuning trainer trains, and loading it back."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from deramos_reward._optional import require
from deramos_reward.errors import InputError
from deramos_reward.integrations.musicgen.base import MusicGenBackend
from deramos_reward.integrations.musicgen.factory import musicgen_backend
from deramos_reward.integrations.training.common.config import AdapterTrainingConfig
from deramos_reward.validation import check_prompts

__all__ = [
    "ForwardModule",
    "PolicySetup",
    "attach_lora",
    "default_lora_config",
    "load_adapter",
    "lora_config",
    "set_up_policy",
    "trainable_parameters",
    "training_prompts",
]


def lora_config(
    target_modules: str | Sequence[str], *, r: int = 8, alpha: int = 16, dropout: float = 0.0
) -> Any:
    """A ``peft.LoraConfig`` (no bias) on ``target_modules`` (a regex or a list of module names)."""
    for name, value in (("r", r), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"LoRA {name} must be a positive int, got {value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be a number in [0, 1), got {dropout!r}")
    if isinstance(target_modules, str):
        targets: str | list[str] = target_modules
    else:
        targets = list(target_modules)
    return require("peft").LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=float(dropout), target_modules=targets, bias="none"
    )


def attach_lora(
    backend: Any,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] | None = None,
    peft_config: Any = None,
    seed: int = 0,
) -> Any:
    """Put a LoRA adapter on ``backend.trainable_module()`` in place and return the ``peft.PeftModel``.

    Args:
        backend: a MusicGen backend (``musicgen_backend(model, processor)``); its ``trainable_module()``
            (transformers: the model; AudioCraft: ``musicgen.lm``) gets the adapter, on
            ``target_modules`` or, when None, ``backend.lora_target_modules()``.
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        peft_config: a ``peft.LoraConfig`` to use instead of the one built from the arguments above.
        seed: seeds the adapter's initialisation; the caller's RNG state is left untouched.

    The layers are injected into the original modules, so the model object you hold generates with the
    adapter active afterwards, and the backend runs the adapted module (``set_trainable_module``). A trainable module that already is a ``PeftModel`` is returned as it is
    (its adapter trains further; ``peft_config`` must then be None). Only LoRA parameters require grad.
    """
    peft = require("peft")
    module = backend.trainable_module()
    if isinstance(module, peft.PeftModel):
        if peft_config is not None:
            raise ValueError("the model already has a peft adapter; do not pass peft_config")
        policy = module
        for name, param in policy.named_parameters():
            param.requires_grad_("lora_" in name)
    else:
        tuner_layer = require("peft.tuners.tuners_utils").BaseTunerLayer
        if any(isinstance(m, tuner_layer) for m in module.modules()):
            raise ValueError(
                "the model carries peft layers but is not a PeftModel; pass the PeftModel "
                "(or the model without an adapter)"
            )
        if peft_config is None:
            targets = backend.lora_target_modules() if target_modules is None else target_modules
            peft_config = lora_config(targets, r=r, alpha=alpha, dropout=dropout)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            policy = peft.get_peft_model(module, peft_config)
    if not any(p.requires_grad for p in policy.parameters()):
        raise ValueError("the adapter has no trainable parameters (check target_modules)")
    backend.set_trainable_module(policy)
    return policy


def training_prompts(prompts: Sequence[str], name: str = "prompts") -> list[str]:
    """A non-empty list of non-empty prompts (one string counts as one prompt), or an error naming ``name``."""
    out = check_prompts(prompts, name=name)
    if not out:
        raise InputError(f"{name} must not be empty")
    return out


class PolicySetup(NamedTuple):
    """What an online trainer (RL, reward backprop) starts from; see :func:`set_up_policy`."""

    backend: Any  # MusicGenBackend running the adapted module
    policy: Any  # the peft.PeftModel
    prompts: list[str]
    eval_prompts: list[str] | None
    frames: int  # code frames per sample (config.duration)


def set_up_policy(
    model: Any,
    processor: Any,
    reward: Any,
    prompts: Sequence[str],
    eval_prompts: Sequence[str] | None,
    config: Any,
    config_type: type,
) -> PolicySetup:
    """Check an online trainer's inputs and put the LoRA adapter of ``config.lora_*`` on the model.

    ``model`` (with ``processor`` for transformers) becomes a backend; ``reward`` must be callable
    ``(audio [B, C, T], sample_rate, prompts) -> [B]``; ``config`` an instance of ``config_type`` whose
    ``duration`` gives at least the model's minimum number of frames.
    """
    if not isinstance(config, config_type):
        raise TypeError(f"config must be a {config_type.__name__}, got {type(config).__name__}")
    if not callable(reward):
        raise TypeError(
            "reward must be a MusicReward or a callable (audio [B, C, T], sample_rate, prompts) -> [B], "
            f"got {type(reward).__name__}"
        )
    train = training_prompts(prompts, "prompts")
    held_out = None if eval_prompts is None else training_prompts(eval_prompts, "eval_prompts")
    backend = musicgen_backend(model, processor)
    backend.check_ready()
    frames = backend.frames_for(config.duration)
    if frames < backend.min_frames:
        raise InputError(
            f"duration {config.duration} s gives {frames} frames; this model needs at least {backend.min_frames}"
        )
    policy = attach_lora(
        backend,
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        seed=config.seed,
    )
    return PolicySetup(backend, policy, train, held_out, frames)


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters that require grad (the adapter's), in registration order."""
    return [p for p in module.parameters() if p.requires_grad]


class ForwardModule(nn.Module):
    """``forward(*args) = fn(*args)`` with ``module`` registered as a child, so that
    ``accelerator.prepare`` (DDP) wraps a pass that goes through a backend method rather than
    ``module.__call__`` (e.g. ``backend.sequence_logprobs``) and still averages its gradients."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]):
        super().__init__()
        self.module = module
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def default_lora_config(backend: MusicGenBackend, config: AdapterTrainingConfig | None = None) -> Any:
    """A ``peft.LoraConfig`` from ``config``'s ``lora_*`` fields (the defaults when None): rank 8, alpha
    16, no dropout, on MusicGen's decoder attention and feed-forward projections.

    ``backend``: a :class:`~deramos_reward.integrations.musicgen.MusicGenBackend` (or a MusicGen; see ``musicgen_backend``);
    ``config.lora_target_modules`` None takes the backend's
    :meth:`~deramos_reward.integrations.musicgen.MusicGenBackend.lora_target_modules`.
    """
    c = AdapterTrainingConfig() if config is None else config
    targets = (
        musicgen_backend(backend).lora_target_modules()
        if c.lora_target_modules is None
        else c.lora_target_modules
    )
    return lora_config(targets, r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout)


def load_adapter(model: Any, path: str | os.PathLike, is_trainable: bool = False) -> Any:
    """Load a saved adapter into ``model`` with ``peft.PeftModel.from_pretrained``.

    ``model``: the same kind of base model it was trained on (transformers ``MusicgenForConditionalGeneration``,
    AudioCraft ``MusicGen`` or ``LMModel``). The adapter is injected in place, so an AudioCraft ``MusicGen``
    generates with it afterwards. Returns the ``peft.PeftModel`` (use ``with peft_model.disable_adapter():``
    to get the base model back temporarily).
    """
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} holds no peft adapter (adapter_config.json missing)")
    module = musicgen_backend(model).trainable_module()
    if isinstance(module, require("peft").PeftModel):
        raise ValueError("model already has a peft adapter; pass the base model")
    return require("peft").PeftModel.from_pretrained(module, str(path), is_trainable=is_trainable)
