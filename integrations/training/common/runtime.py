"""Devices, precision, accelerate, schedules and gradient norms of the MusicGen fine-tuning trainers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from deramos_reward._optional import require
from deramos_reward.integrations.training.common.config import SCHEDULERS

# ------------------------------------------------------------------------------ accelerate, precision


def resolve_bf16(flag: bool | None, device: torch.device | str) -> bool:
    """bf16 autocast on or off: ``None`` = on exactly when ``device`` is CUDA with bf16 support
    (on CPUs it is slower than float32 without AMX and changes results); True/False as given."""
    device = torch.device(device)
    if flag is None:
        return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if not isinstance(flag, bool):
        raise TypeError(f"bf16 must be True, False or None (automatic), got {flag!r}")
    if flag and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"bf16=True but {device} does not support bfloat16; use bf16=None or False")
    return flag


def accelerator_device() -> torch.device:
    """The device accelerate will run this process on, found without initialising accelerate's process
    state (which must be left to the ``Accelerator`` so it sees ``torchrun`` / ``accelerate launch``):
    ``cuda:LOCAL_RANK`` when CUDA is available and ``ACCELERATE_USE_CPU`` is not set, else the CPU."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")
    if torch.cuda.is_available() and not use_cpu:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type when ``enabled`` (a no-op context otherwise)."""
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_accelerator(
    *,
    gradient_accumulation_steps: int = 1,
    bf16: bool = False,
    project_dir: str | os.PathLike | None = None,
    cpu: bool | None = None,
) -> Any:
    """An ``accelerate.Accelerator``: mixed precision ``"bf16"``/``"no"`` and gradient accumulation
    (logging goes through the trainers' callbacks, not accelerate's trackers).

    ``cpu``: train on the CPU; None = when CUDA is not available. accelerate runs several CPU processes
    (``accelerate launch --multi_gpu --num_processes N`` on a machine without GPUs) as one gloo group
    only when told ``cpu=True``; otherwise each process would train alone.

    accelerate keeps the mixed precision in a process-wide state that cannot change once set (a second
    Accelerator with another precision raises), so trainers here pass ``bf16=False`` and wrap their
    passes in :func:`autocast` themselves; ``bf16=True`` is for a process that only ever uses bf16."""
    accelerate = require("accelerate")
    return accelerate.Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision="bf16" if bf16 else "no",
        project_dir=None if project_dir is None else os.fspath(project_dir),
        cpu=not torch.cuda.is_available() if cpu is None else bool(cpu),
    )


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int) -> Any:
    """transformers' ``get_scheduler`` (``linear``, ``constant``, ``constant_with_warmup``, ``cosine``)."""
    if name not in SCHEDULERS:
        raise ValueError(f"lr_scheduler_type must be one of {SCHEDULERS}, got {name!r}")
    transformers = require("transformers")
    return transformers.get_scheduler(
        name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max(1, total_steps)
    )


def grad_norm(accelerator: Any, parameters: Sequence[nn.Parameter], max_norm: float) -> float:
    """Clip the gradients to ``max_norm`` when it is > 0 (accelerate's ``clip_grad_norm_``) and return
    their total L2 norm before clipping (``nan`` when no parameter has a gradient)."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return float("nan")
    if max_norm > 0:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params])))


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` for the block, its train/eval mode restored after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)
