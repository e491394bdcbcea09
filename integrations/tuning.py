"""Loop infrastructure shared by the MusicGen fine-tuning trainers (online RL, DPO, reward backpropagation).

A trainer uses it in five places::

    from deramos_reward.integrations import tuning

    # 1. the policy: a LoRA adapter on the backend's trainable module (the reference = adapter disabled)
    policy = tuning.attach_lora(backend, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                target_modules=cfg.lora_target_modules, seed=cfg.seed)
    with tuning.adapter_disabled(policy):
        ref = backend.sequence_logprobs(prompts, codes)          # reference policy

    # 2. accelerate; bf16 autocast only where it helps (None = CUDA with bf16 support), applied by the
    #    trainer around its passes (accelerate's own mixed precision is process-wide: keep it "no")
    bf16 = tuning.resolve_bf16(cfg.bf16, tuning.accelerator_device())
    accelerator = tuning.make_accelerator(gradient_accumulation_steps=..., report_to=cfg.report_to,
                                          project_dir=run_dir)
    forward = tuning.ForwardModule(policy, lambda p, c: backend.sequence_logprobs(p, c).token_logps)
    forward, optimizer = accelerator.prepare(forward, optimizer)    # DDP wraps the scoring pass
    with tuning.autocast(accelerator.device, bf16):                 # sampling, scoring, every pass
        ...

    # 3. settings and resume: refuse a changed command, pick up the latest checkpoint
    tuning.check_run_settings(run_dir, cfg.to_dict(), ignore=("logging_steps",))
    state = tuning.load_training_state(run_dir, policy, optimizer, scheduler, accelerator=accelerator)
    step = state.step if state else 0                                # logs / extra come back too

    # 4. logs: JSONL rows (main process), a tqdm bar, accelerate's trackers
    logger = tuning.RunLogger(run_dir / "log.jsonl", total=max_steps, initial=step,
                              rows=state.logs if state else [], accelerator=accelerator,
                              tracker_project="deramos-rl", tracker_config=cfg.to_dict())
    logger.log({"loss": 0.1, "time/update": 0.5}, step=step)         # one row
    logger.advance()                                                 # one step done

    # 5. every save_steps: adapter, optimizer, scheduler, RNG states, step, logs, extra state
    tuning.save_training_state(run_dir, policy, optimizer, scheduler, step=step, logs=logger.rows,
                               extra={"baseline": 0.3}, accelerator=accelerator)
    logger.close()

Checkpoint layout (``RUN/checkpoint/``, written under a temporary name, swapped in with renames, never
pickled: safetensors + JSON)::

    adapter/                    peft ``save_pretrained`` folder (load_adapter-compatible)
    optimizer.safetensors       optimizer tensors, param groups in the metadata
    trainer_state.json          step, scheduler state, log rows, extra state, process count
    rng-<rank>.safetensors      torch (CPU and CUDA), numpy and Python RNG states of each process

A run killed at any moment leaves the previous or the new checkpoint complete (``checkpoint.old`` is
read when the kill fell between the two renames).

Randomness for a step should be derived from ``(seed, step, ...)`` with :func:`derive_seed` (from
:mod:`deramos_reward.seeding`, the package's one seed derivation) where
possible (then a resumed run does not even depend on the restored RNG states); the RNG states are
restored anyway, for whatever draws from the global generators (dropout, shuffling).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from deramos_reward._optional import require
from deramos_reward.checkpoint import atomic_write_bytes
from deramos_reward.errors import InputError
from deramos_reward.jsonl import append_rows, write_rows
from deramos_reward.seeding import derive_seed
from deramos_reward.training.state import optimizer_state_dict, optimizer_tensors
from deramos_reward.validation import check_prompts

from .adapter_config import SCHEDULERS
from .backend import musicgen_backend
from .backend_base import adapter_disabled, unwrap_module

__all__ = [
    "CHECKPOINT_DIR",
    "RUN_STATE",
    "accelerator_device",
    "ForwardModule",
    "RunLogger",
    "TrainingState",
    "adapter_disabled",
    "attach_lora",
    "autocast",
    "check_run_settings",
    "derive_seed",
    "grad_norm",
    "lora_config",
    "load_training_state",
    "make_accelerator",
    "make_scheduler",
    "resolve_bf16",
    "save_adapter",
    "save_training_state",
    "trainable_parameters",
]

CHECKPOINT_DIR = "checkpoint"
"""Name of the checkpoint folder inside a run folder."""
_STATE_FILE = "trainer_state.json"
_SETTINGS_FILE = "settings.json"


# ----------------------------------------------------------------------------------------------- LoRA


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
    report_to: str | Sequence[Any] = "all",
    project_dir: str | os.PathLike | None = None,
    cpu: bool | None = None,
) -> Any:
    """An ``accelerate.Accelerator``: mixed precision ``"bf16"``/``"no"``, gradient accumulation, and
    ``log_with`` from ``report_to`` (trl's name): ``"all"`` = every tracker installed (none is fine),
    ``"none"``, or a list of tracker names / ``accelerate.tracking.GeneralTracker`` objects.

    ``cpu``: train on the CPU; None = when CUDA is not available. accelerate runs several CPU processes
    (``accelerate launch --multi_gpu --num_processes N`` on a machine without GPUs) as one gloo group
    only when told ``cpu=True``; otherwise each process would train alone.


    accelerate keeps the mixed precision in a process-wide state that cannot change once set (a second
    Accelerator with another precision raises), so trainers here pass ``bf16=False`` and wrap their
    passes in :func:`autocast` themselves; ``bf16=True`` is for a process that only ever uses bf16."""
    accelerate = require("accelerate")
    if report_to in ("none", None) or report_to == []:
        log_with = None
    elif isinstance(report_to, str):
        log_with = [report_to]
    else:
        log_with = list(report_to)
    if log_with is not None and "all" in log_with:  # accelerate warns when none is installed: stay quiet
        installed = require("accelerate.tracking").get_available_trackers()
        log_with = [t for t in log_with if t != "all"] + list(installed) or None
    return accelerate.Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision="bf16" if bf16 else "no",
        log_with=log_with,
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


# ------------------------------------------------------------------------------------ run settings


def check_run_settings(
    run_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    *,
    ignore: Iterable[str] = (),
    filename: str = _SETTINGS_FILE,
    is_main_process: bool = True,
) -> bool:
    """Record a run's settings, or check that a resumed run uses the same ones.

    The first call writes ``settings`` (JSON) to ``run_dir/filename`` (main process only) and returns
    False. Later calls return True when the recorded settings equal ``settings`` (keys in ``ignore``
    excepted) and raise ``InputError`` (a ``ValueError``) naming each changed setting otherwise.
    """
    path = Path(run_dir) / filename
    current = json.loads(json.dumps(dict(settings)))
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON ({err}); remove it or use a new run folder") from err
        skip = set(ignore)
        keys = sorted((set(recorded) | set(current)) - skip)
        changed = [
            f"{k}: {recorded.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
            for k in keys
            if recorded.get(k, "<unset>") != current.get(k, "<unset>")
        ]
        if changed:
            raise InputError(
                f"{Path(run_dir)} holds a run with other settings ({'; '.join(changed)}); "
                "rerun with the same settings to resume, or use a new output folder"
            )
        return True
    if is_main_process:
        atomic_write_bytes(path, (json.dumps(current, indent=2, sort_keys=True) + "\n").encode())
    return False


# ------------------------------------------------------------------------------------ checkpoints


class TrainingState(NamedTuple):
    """What :func:`load_training_state` restored: ``step``, ``logs`` (the log rows written up to the
    checkpoint), ``extra`` (the trainer's own JSON state) and the checkpoint ``folder``."""

    step: int
    logs: list[dict[str, Any]]
    extra: dict[str, Any]
    folder: Path


def _rank(accelerator: Any) -> tuple[int, int, bool]:
    if accelerator is None:
        return 0, 1, True
    return accelerator.process_index, accelerator.num_processes, accelerator.is_main_process


def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's RNG states as tensors + JSON metadata (no pickling)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    meta = {
        "numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached)]),
        "python": json.dumps([version, list(internal), gauss]),
    }
    return tensors, meta


def _set_rng_state(path: Path) -> None:
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    kind, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))


def _scheduler_json(scheduler: Any) -> Any:
    if scheduler is None:
        return None
    try:
        return json.loads(json.dumps(scheduler.state_dict()))
    except TypeError as err:
        raise TypeError(f"the scheduler's state is not JSON ({err}); use make_scheduler") from err


def save_training_state(
    run_dir: str | os.PathLike,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    step: int,
    logs: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
    accelerator: Any = None,
) -> Path:
    """Write ``run_dir/checkpoint`` atomically (layout in the module docstring); call on every process.

    ``policy``: the ``peft.PeftModel`` (accelerate/DDP wrappers are unwrapped); ``extra``: JSON-ready
    trainer state. The main process writes the adapter, optimizer and state; each process its RNG states.
    """
    run_dir = Path(run_dir)
    rank, world, main = _rank(accelerator)
    tmp = run_dir / f".{CHECKPOINT_DIR}.tmp"
    _barrier(accelerator)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(accelerator)
    tensors, meta = _rng_state()
    save_file(tensors, os.fspath(tmp / f"rng-{rank}.safetensors"), metadata=meta)
    if main:
        unwrap_module(policy).save_pretrained(os.fspath(tmp / "adapter"))
        opt_tensors, opt_meta = optimizer_tensors(optimizer.state_dict())
        save_file(opt_tensors, os.fspath(tmp / "optimizer.safetensors"), metadata=opt_meta)
        state = {
            "step": int(step),
            "num_processes": world,
            "scheduler": _scheduler_json(scheduler),
            "extra": dict(extra or {}),
            "logs": [dict(r) for r in logs],
        }
        atomic_write_bytes(tmp / _STATE_FILE, json.dumps(state, allow_nan=False).encode())
    _barrier(accelerator)
    if main:
        last, old = run_dir / CHECKPOINT_DIR, run_dir / f"{CHECKPOINT_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    _barrier(accelerator)
    return run_dir / CHECKPOINT_DIR


def checkpoint_folder(run_dir: str | os.PathLike) -> Path | None:
    """The latest complete checkpoint folder of a run, or None."""
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        folder = Path(run_dir) / name
        if (folder / _STATE_FILE).is_file() and (folder / "adapter").is_dir():
            return folder
    return None


def load_training_state(
    run_dir: str | os.PathLike,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    accelerator: Any = None,
    restore_rng: bool = True,
) -> TrainingState | None:
    """Restore the latest checkpoint of ``run_dir`` into ``policy`` (adapter weights), ``optimizer``,
    ``scheduler`` and this process's RNG states; None when the run has no checkpoint yet.

    Raises ``ValueError`` when the checkpoint was written by a different number of processes."""
    folder = checkpoint_folder(run_dir)
    if folder is None:
        return None
    rank, world, _ = _rank(accelerator)
    try:
        state = json.loads((folder / _STATE_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{folder / _STATE_FILE} is not valid JSON ({err}); remove {folder} to restart"
        ) from err
    if state.get("num_processes", 1) != world:
        raise ValueError(
            f"{folder} was written by {state.get('num_processes')} processes; resume it with the same "
            f"number (got {world})"
        )
    peft = require("peft")
    weights = load_file(os.fspath(folder / "adapter" / "adapter_model.safetensors"))
    model = unwrap_module(policy)
    device = next(model.parameters()).device
    result = peft.set_peft_model_state_dict(model, {k: v.to(device) for k, v in weights.items()})
    if getattr(result, "unexpected_keys", None):
        raise ValueError(
            f"{folder}/adapter does not fit this model (unexpected {result.unexpected_keys[:3]})"
        )
    optimizer.load_state_dict(optimizer_state_dict(folder / "optimizer.safetensors"))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        _set_rng_state(folder / f"rng-{rank}.safetensors")
    return TrainingState(
        int(state["step"]), list(state.get("logs", [])), dict(state.get("extra", {})), folder
    )


RUN_STATE = (CHECKPOINT_DIR, _SETTINGS_FILE, "log.jsonl")
"""What a run folder holds besides an adapter: kept by ``save_adapter(..., keep=RUN_STATE)``."""


def save_adapter(
    policy: Any,
    path: str | os.PathLike,
    *,
    files: Mapping[str, Any] | None = None,
    keep: Sequence[str] = (),
    accelerator: Any = None,
) -> Path:
    """Save the adapter with peft (``adapter_config.json`` + ``adapter_model.safetensors``) into ``path``,
    plus one JSON file per ``files`` entry (name -> JSON-ready value), e.g. the config and the logs.

    Written to a temporary sibling folder and renamed into place, by the main process only; every
    process waits for it. An existing folder is replaced, except its entries named in ``keep`` (e.g.
    :data:`RUN_STATE` when the adapter goes into its run folder), which are copied over first.
    Load it back with ``load_adapter``."""
    path = Path(path)
    _, _, main = _rank(accelerator)
    _barrier(accelerator)
    if main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            unwrap_module(policy).save_pretrained(os.fspath(tmp / "adapter"))
            for name, value in (files or {}).items():
                data = json.dumps(value, indent=2, allow_nan=False) + "\n"
                (tmp / "adapter" / name).write_text(data)
            for name in keep:
                old = path / name
                if old.is_dir():
                    shutil.copytree(old, tmp / "adapter" / name)
                elif old.is_file():
                    shutil.copy2(old, tmp / "adapter" / name)
            if path.exists():
                os.replace(path, tmp / "old")
            os.replace(tmp / "adapter", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _barrier(accelerator)
    return path


# -------------------------------------------------------------------------------------------- logs


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().item() if value.numel() == 1 else value.detach().tolist()
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no nan/inf
    return value


class RunLogger:
    """Log rows of a training run: a JSONL file (main process), a tqdm bar and accelerate's trackers.

    Args:
        path: the JSONL file (None: no file). It is rewritten with ``rows`` at start, so a resumed run
            keeps exactly the rows up to its checkpoint and drops rows logged after it.
        total, initial: the bar's total steps and starting step.
        rows: rows to start from (``TrainingState.logs`` when resuming, else []).
        accelerator: for the main-process check and ``accelerator.log`` (trackers); None = one process.
        tracker_project, tracker_config: passed to ``accelerator.init_trackers`` when it has trackers.
        postfix: keys shown on the bar.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        total: int,
        initial: int = 0,
        rows: Sequence[Mapping[str, Any]] = (),
        desc: str = "train",
        accelerator: Any = None,
        tracker_project: str = "deramos",
        tracker_config: Mapping[str, Any] | None = None,
        postfix: Sequence[str] = ("loss",),
    ):
        _, _, self.is_main = _rank(accelerator)
        local_main = accelerator is None or accelerator.is_local_main_process
        self.path = None if path is None else Path(path)
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]
        self.accelerator = accelerator
        self.postfix = tuple(postfix)
        if self.is_main and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_rows(self.path, self.rows)
        self._trackers = accelerator is not None and bool(getattr(accelerator, "log_with", None))
        if self._trackers:
            config = {k: _json_value(v) for k, v in (tracker_config or {}).items()}
            accelerator.init_trackers(
                tracker_project, config={k: _tracker_value(v) for k, v in config.items()}
            )
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not local_main)

    def log(self, row: Mapping[str, Any], step: int) -> dict[str, Any]:
        """Append ``{"step": step, **row}`` (non-finite floats become null) and report it; returns the row."""
        entry = {"step": int(step), **{k: _json_value(v) for k, v in row.items()}}
        self.rows.append(entry)
        if self.is_main and self.path is not None:
            append_rows(self.path, [entry])
        if self._trackers:
            numbers = {k: v for k, v in entry.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(numbers, step=int(step))
        shown = {k: f"{entry[k]:.4g}" for k in self.postfix if isinstance(entry.get(k), (int, float))}
        if shown:
            self.bar.set_postfix(shown)
        return entry

    def advance(self, n: int = 1) -> None:
        """Move the bar ``n`` steps."""
        self.bar.update(n)

    def close(self) -> None:
        """Close the bar and end the trackers."""
        self.bar.close()
        if self._trackers:
            self.accelerator.end_training()


def _tracker_value(value: Any) -> Any:
    """Trackers take flat scalars/strings as run config: lists and dicts go in as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` for the block, its train/eval mode restored after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


__all__ += ["checkpoint_folder", "eval_mode"]
