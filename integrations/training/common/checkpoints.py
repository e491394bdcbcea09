"""Resumable training state of a fine-tuning run: written atomically, never pickled.

A run folder holds one ``checkpoint-<step>`` folder per save (transformers' ``Trainer`` names; the oldest
are removed beyond ``save_total_limit``)::

    checkpoint-<step>/
        adapter/                 peft ``save_pretrained`` folder (``load_adapter``-compatible)
        optimizer.safetensors    optimizer tensors, param groups in the metadata
        trainer_state.json       step, scheduler state, log rows, the trainer's own state, process count
        rng-<rank>.safetensors   torch (CPU and CUDA), numpy and Python RNG states of each process

Each is written under a temporary name (``.checkpoint-<step>.tmp``) and renamed into place, so a run
killed at any moment leaves complete checkpoints only; the latest complete one is what a resume reads.
Runs written by earlier versions (one ``checkpoint/`` folder, ``checkpoint.old`` during a swap) are read
too. Randomness for a step should be derived from ``(seed, step, ...)`` with
:func:`deramos_reward.seeding.derive_seed` where possible (then a resumed run does not even depend on
the restored RNG states); the RNG states are restored anyway, for whatever draws from the global
generators (dropout, shuffling).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from deramos_reward._optional import require
from deramos_reward.checkpoint import atomic_write_bytes
from deramos_reward.integrations.musicgen.base import unwrap_module
from deramos_reward.integrations.training.common.settings import SETTINGS_FILE
from deramos_reward.training.state import optimizer_state_dict, optimizer_tensors

CHECKPOINT_PREFIX = "checkpoint-"
"""A checkpoint folder is ``<output_dir>/checkpoint-<step>``."""
LEGACY_CHECKPOINT_DIRS = ("checkpoint", "checkpoint.old")
"""The checkpoint folders of runs written before checkpoints were numbered (read, never written)."""
_STATE_FILE = "trainer_state.json"


class TrainingState(NamedTuple):
    """What :func:`load_training_state` restored: ``step``, ``logs`` (the log rows written up to the
    checkpoint), ``extra`` (the trainer's own JSON state) and the checkpoint ``folder``."""

    step: int
    logs: list[dict[str, Any]]
    extra: dict[str, Any]
    folder: Path


def process_rank(accelerator: Any) -> tuple[int, int, bool]:
    """``(rank, world size, is main)`` of this process: the accelerator's, else torch.distributed's when a
    process group is up, else a single process."""
    if accelerator is not None:
        return accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        return rank, torch.distributed.get_world_size(), rank == 0
    return 0, 1, True


def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def adapter_state(policy: Any) -> dict[str, torch.Tensor] | None:
    """The adapter's weights as full tensors when FSDP2 shards them (``DTensor`` parameters), for
    ``save_pretrained(state_dict=...)``; None when nothing is sharded (peft then reads the weights itself).
    Gathering is a collective: every process must call it."""
    module = unwrap_module(policy)
    if not any(isinstance(p, DTensor) for p in module.parameters()):
        return None
    return {
        name: value.full_tensor() if isinstance(value, DTensor) else value
        for name, value in module.state_dict().items()
        if "lora_" in name
    }


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
    save_total_limit: int | None = None,
) -> Path:
    """Write ``run_dir/checkpoint-<step>`` atomically (layout in the module docstring); call on every
    process. Then remove the oldest checkpoints beyond ``save_total_limit`` (None: keep all) and any
    checkpoint folder of the earlier, unnumbered layout.

    ``policy``: the ``peft.PeftModel`` (accelerate/DDP wrappers are unwrapped); ``extra``: JSON-ready
    trainer state. The main process writes the adapter, optimizer and state; each process its RNG states.
    Returns the checkpoint folder.
    """
    run_dir = Path(run_dir)
    rank, world, main = process_rank(accelerator)
    name = f"{CHECKPOINT_PREFIX}{int(step)}"
    tmp, final = run_dir / f".{name}.tmp", run_dir / name
    _barrier(accelerator)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(accelerator)
    tensors, meta = _rng_state()
    save_file(tensors, os.fspath(tmp / f"rng-{rank}.safetensors"), metadata=meta)
    gathered = adapter_state(policy)
    if main:
        unwrap_module(policy).save_pretrained(os.fspath(tmp / "adapter"), state_dict=gathered)
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
        if final.exists():  # the same step saved again (a callback asked for it): swap, then drop the old
            os.replace(final, run_dir / f".{name}.old")
        os.replace(tmp, final)
        shutil.rmtree(run_dir / f".{name}.old", ignore_errors=True)
        _rotate(run_dir, save_total_limit)
    _barrier(accelerator)
    return final


def checkpoint_folders(run_dir: str | os.PathLike) -> list[Path]:
    """The complete numbered checkpoints of a run, oldest first."""
    run_dir = Path(run_dir)
    found = []
    if run_dir.is_dir():
        for folder in run_dir.iterdir():
            suffix = folder.name[len(CHECKPOINT_PREFIX) :]
            if folder.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and _complete(folder):
                found.append((int(suffix), folder))
    return [folder for _, folder in sorted(found)]


def _complete(folder: Path) -> bool:
    return (folder / _STATE_FILE).is_file() and (folder / "adapter").is_dir()


def _rotate(run_dir: Path, save_total_limit: int | None) -> None:
    for name in LEGACY_CHECKPOINT_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    if save_total_limit is None:
        return
    folders = checkpoint_folders(run_dir)
    for folder in folders[: max(0, len(folders) - save_total_limit)]:
        shutil.rmtree(folder, ignore_errors=True)


def checkpoint_folder(run_dir: str | os.PathLike) -> Path | None:
    """The latest complete checkpoint folder of a run (numbered, else the earlier layout's), or None."""
    folders = checkpoint_folders(run_dir)
    if folders:
        return folders[-1]
    for name in LEGACY_CHECKPOINT_DIRS:
        folder = Path(run_dir) / name
        if _complete(folder):
            return folder
    return None


def resolve_checkpoint(
    run_dir: str | os.PathLike | None, resume_from_checkpoint: bool | str | None
) -> Path | None:
    """The checkpoint a ``train(resume_from_checkpoint=...)`` call starts from (transformers' meaning):
    None = the latest in ``run_dir`` if there is one; True = the latest, which must exist; a path = that
    checkpoint folder, which must be complete. Raises ``ValueError`` naming what is missing."""
    if resume_from_checkpoint is None or resume_from_checkpoint is True:
        folder = None if run_dir is None else checkpoint_folder(run_dir)
        if folder is None and resume_from_checkpoint is True:
            raise ValueError(f"resume_from_checkpoint=True but {run_dir} holds no complete checkpoint")
        return folder
    if not isinstance(resume_from_checkpoint, (str, os.PathLike)) or isinstance(resume_from_checkpoint, bool):
        raise TypeError(
            f"resume_from_checkpoint must be None, True or a checkpoint folder, got {resume_from_checkpoint!r}"
        )
    folder = Path(resume_from_checkpoint)
    if not _complete(folder):
        raise ValueError(
            f"resume_from_checkpoint={os.fspath(folder)!r} is not a complete checkpoint folder "
            f"({_STATE_FILE} and adapter/ expected)"
        )
    return folder


def load_training_state(
    run_dir: str | os.PathLike | None,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    accelerator: Any = None,
    restore_rng: bool = True,
    folder: str | os.PathLike | None = None,
) -> TrainingState | None:
    """Restore ``folder`` (default: the latest checkpoint of ``run_dir``) into ``policy`` (adapter weights), ``optimizer``,
    ``scheduler`` and this process's RNG states; None when the run has no checkpoint yet.

    Raises ``ValueError`` when the checkpoint was written by a different number of processes."""
    folder = checkpoint_folder(run_dir) if folder is None and run_dir is not None else folder
    if folder is None:
        return None
    folder = Path(folder)
    rank, world, _ = process_rank(accelerator)
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


def run_state(run_dir: str | os.PathLike) -> list[str]:
    """What a run folder holds besides an adapter (settings, log, checkpoints, event files): the entries
    ``save_adapter(..., keep=run_state(run_dir))`` carries over when the adapter goes into its run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    fixed = {SETTINGS_FILE, "log.jsonl", "runs", *LEGACY_CHECKPOINT_DIRS}
    return sorted(
        p.name for p in run_dir.iterdir() if p.name in fixed or p.name.startswith(CHECKPOINT_PREFIX)
    )


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
    :func:`run_state` when the adapter goes into its run folder), which are copied over first.
    Load it back with ``load_adapter``."""
    path = Path(path)
    _, _, main = process_rank(accelerator)
    _barrier(accelerator)
    gathered = adapter_state(policy)
    if main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            unwrap_module(policy).save_pretrained(os.fspath(tmp / "adapter"), state_dict=gathered)
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
