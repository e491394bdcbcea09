"""Checkpoint folders: ``config.json`` + ``model.safetensors``. Nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import DeRAMOSConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class UnsafeCheckpointError(ValueError):
    """The folder carries pickled weights, which can run arbitrary code when loaded."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs should be readable like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(
    directory: str | os.PathLike, config: DeRAMOSConfig, state: dict[str, torch.Tensor]
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically (file by file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "library": "deramos-reward"})
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / WEIGHTS_NAME)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_bytes(directory / CONFIG_NAME, config.to_json().encode())
    return directory


def refuse_pickles(directory: Path) -> None:
    """Raise UnsafeCheckpointError if ``directory`` holds pickle-format weight files."""
    found = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise UnsafeCheckpointError(
            f"checkpoint folder {str(directory)!r} contains pickle-format file(s) {found}; deramos-reward loads "
            f"only {CONFIG_NAME} + {WEIGHTS_NAME} because unpickling can execute arbitrary code. "
            "Convert the weights to safetensors (safetensors.torch.save_file) and remove the pickle files."
        )


def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local checkpoint folder, or a hub id downloaded (config + safetensors only) to the cache."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    name = os.fspath(path_or_hub_id)
    if path.exists():
        raise ValueError(
            f"checkpoint {name!r} is a file; expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ValueError(
            f"checkpoint folder {name!r} does not exist (and it is not a hub id of the form owner/name)"
        )
    from huggingface_hub import snapshot_download

    from .encoders.loading import load_backbone

    local = load_backbone(
        name,
        lambda n: snapshot_download(n, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]),
        "DeRA-MOS checkpoint",
    )
    return Path(local)


def read_checkpoint(directory: Path) -> tuple[DeRAMOSConfig, dict[str, torch.Tensor]]:
    """Validated config and the tensors of a checkpoint folder."""
    refuse_pickles(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ValueError(f"checkpoint folder {str(directory)!r} has no {p.name}")
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    config = DeRAMOSConfig.from_dict(data)
    try:
        state = load_file(weights_path)
    except Exception as err:
        raise ValueError(f"{weights_path} is not a readable safetensors file: {err}") from err
    return config, state


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming missing/unexpected keys or mismatched shapes."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise ValueError(f"{source} is missing weights {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise ValueError(
            f"{source} has unexpected weights {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, ref in expected.items():
        if tuple(found[key].shape) != tuple(ref.shape):
            raise ValueError(
                f"{source}: weight {key!r} has shape {tuple(found[key].shape)} but the config implies {tuple(ref.shape)}"
            )
