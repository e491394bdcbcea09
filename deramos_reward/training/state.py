"""The resumable training state in ``RUN_DIR/last/``, written atomically, never pickled.

```
last/model/            DeRAMOS.save_pretrained folder (config.json + model.safetensors)
last/optimizer.safetensors   optimizer tensors; param groups in the file's JSON metadata
last/state.json        epoch, early-stopping and best-checkpoint trackers, seed, config
```
The folder is written under a temporary name and swapped in with two renames
(``last`` -> ``last.old``, temporary -> ``last``), so a run killed at any moment leaves either
the previous or the new state complete; ``read_state`` picks up ``last.old`` if the kill fell
between the renames.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import atomic_write_bytes
from ..errors import InputError
from ..model import DeRAMOS

LAST = "last"


def optimizer_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An optimizer ``state_dict`` -> (tensors by ``state.<param>.<name>``, JSON metadata)."""
    tensors, scalars = {}, {}
    for pid, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{pid}.{name}"] = value
    meta = {"param_groups": json.dumps(state_dict["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, meta


def optimizer_state_dict(path: Path) -> dict[str, Any]:
    """Inverse of ``optimizer_tensors`` for a file written by ``write_state``."""
    state: dict[int, dict[str, Any]] = {}
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = f.get_tensor(key)
    for key, value in json.loads(meta.get("scalars", "{}")).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}


def write_state(
    run_dir: Path, model: DeRAMOS, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write ``run_dir/last`` atomically (see the module doc)."""
    run_dir = Path(run_dir)
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".last-"))
    try:
        model.save_pretrained(tmp / "model")
        tensors, meta = optimizer_tensors(optimizer.state_dict())
        save_file(tensors, os.fspath(tmp / "optimizer.safetensors"), metadata=meta)
        atomic_write_bytes(tmp / "state.json", json.dumps(state, indent=1).encode())
        os.chmod(tmp, 0o755)
        last, old = run_dir / LAST, run_dir / f"{LAST}.old"
        if old.exists():
            shutil.rmtree(old)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return run_dir / LAST


def state_dir(run_dir: Path) -> Path | None:
    """The folder holding the latest complete state, or None when the run never finished an epoch."""
    for name in (LAST, f"{LAST}.old"):
        folder = Path(run_dir) / name
        if (folder / "state.json").is_file() and (folder / "optimizer.safetensors").is_file():
            return folder
    return None


def read_state(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """(state folder, state dict) of the latest finished epoch, or None."""
    folder = state_dir(run_dir)
    if folder is None:
        return None
    try:
        return folder, json.loads((folder / "state.json").read_text())
    except json.JSONDecodeError as err:
        raise InputError(
            f"{folder / 'state.json'} is not valid JSON ({err}); remove {folder} to restart"
        ) from err
