"""Checkpoint folders: ``config.json`` + ``model.safetensors``. Nothing is ever unpickled."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .config import DeRAMOSConfig
from .errors import InputError, InputTypeError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class UnsafeCheckpointError(InputError):
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


def find_pickles(directory: Path) -> list[str]:
    """Pickle-format files anywhere under ``directory`` (relative paths, sorted).

    A file counts when its name, or for a symlink the name of its target, ends in a pickle suffix
    (any case: ``.BIN`` too). Symlinked folders are not followed.
    """
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root) / name
            names = [name]
            if path.is_symlink():
                names.append(Path(os.path.realpath(path)).name)
            if any(Path(n).suffix.lower() in PICKLE_SUFFIXES for n in names):
                found.append(str(path.relative_to(directory)))
    return sorted(found)


def refuse_pickles(directory: Path) -> None:
    """Raise UnsafeCheckpointError if ``directory`` holds pickle-format weight files."""
    found = find_pickles(directory)
    if found:
        raise UnsafeCheckpointError(
            f"checkpoint folder {str(directory)!r} contains pickle-format file(s) {found}; deramos-reward loads "
            f"only {CONFIG_NAME} + {WEIGHTS_NAME} because unpickling can execute arbitrary code. "
            "Convert the weights to safetensors (safetensors.torch.save_file) and remove the pickle files."
        )


def _refuse_disguised_pickle(path: Path) -> None:
    """A pickle or torch.save zip saved under the safetensors name is refused before parsing."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" or head == b"PK\x03\x04":
        kind = "a torch.save zip archive" if head == b"PK\x03\x04" else "a pickle"
        raise UnsafeCheckpointError(
            f"{path} is {kind}, not a safetensors file; deramos-reward never unpickles weights "
            "(unpickling can execute arbitrary code). Convert it with safetensors.torch.save_file."
        )


def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local checkpoint folder, or a hub id downloaded (config + safetensors only) to the cache."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    name = os.fspath(path_or_hub_id)
    if path.exists():
        raise InputError(
            f"checkpoint {name!r} is a file; expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise InputError(
            f"checkpoint folder {name!r} does not exist (and it is not a hub id of the form owner/name)"
        )
    from huggingface_hub import snapshot_download

    from .encoders.loading import load_backbone

    # Read HF_HUB_OFFLINE now, not when huggingface_hub was imported: set at any time, it means
    # "use the local cache only" and no connection is attempted.
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    local = load_backbone(
        name,
        lambda n: snapshot_download(n, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME], local_files_only=offline),
        "DeRA-MOS checkpoint",
    )
    return Path(local)


def files_sha256(paths: list[Path]) -> str:
    """sha256 over the names and bytes of ``paths``, in order (a checkpoint's identity: the same files
    give the same hash wherever they lie)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def checkpoint_sha256(path_or_hub_id: str | os.PathLike) -> str:
    """:func:`files_sha256` of a checkpoint's config and weights (a hub id: from the local cache,
    downloaded when missing, as loading would); InputError when a file is missing."""
    folder = resolve_checkpoint(path_or_hub_id)
    files = [folder / CONFIG_NAME, folder / WEIGHTS_NAME]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise InputError(
            f"checkpoint {os.fspath(path_or_hub_id)!r} has no {missing[0]}; expected a folder with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    return files_sha256(files)


def read_checkpoint(directory: Path) -> tuple[DeRAMOSConfig, dict[str, torch.Tensor]]:
    """Validated config and the tensors of a checkpoint folder."""
    refuse_pickles(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (config_path, weights_path):
        if not p.is_file():
            raise InputError(f"checkpoint folder {str(directory)!r} has no {p.name}")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise InputTypeError(f"{config_path} must hold a JSON object, got {type(data).__name__}")
    config = DeRAMOSConfig.from_saved(data)
    check_backbone_configs(config)
    _refuse_disguised_pickle(weights_path)
    try:
        with safe_open(weights_path, framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(weights_path)
    except Exception as err:
        raise InputError(f"{weights_path} is not a readable safetensors file: {err}") from err
    if metadata.get("format", "pt") != "pt":
        raise InputError(
            f"{weights_path} has metadata format={metadata['format']!r}; expected 'pt' (PyTorch layout). "
            "Weights saved by another framework may be laid out differently; convert them first."
        )
    return config, state


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming missing/unexpected keys or mismatched shapes."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise InputError(f"{source} is missing weights {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise InputError(
            f"{source} has unexpected weights {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, ref in expected.items():
        tensor = found[key]
        if tuple(tensor.shape) != tuple(ref.shape):
            raise InputError(
                f"{source}: weight {key!r} has shape {tuple(tensor.shape)} but the config implies {tuple(ref.shape)}"
            )
        # floating weights may be stored in another float precision (loaded by upcasting); any
        # other change of kind (int, bool, complex) is a corrupt or foreign file
        same_kind = ref.is_floating_point() == tensor.is_floating_point() and (
            ref.is_floating_point() or ref.dtype == tensor.dtype
        )
        if not same_kind:
            raise InputError(
                f"{source}: weight {key!r} has dtype {tensor.dtype} but the model expects {ref.dtype}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"{source}: weight {key!r} holds NaN or Inf values; the checkpoint is corrupt")


def _defaults_of_muq() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    import muq

    from .encoders.muq import conformer_config

    top = {
        f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for f in dataclasses.fields(muq.MuQConfig)
    }
    return top, {"w2v2_config": conformer_config({}), "stat": {}}


def _defaults_of_roberta() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    from transformers import RobertaConfig

    return RobertaConfig().to_dict(), {}


def _defaults_of_clap() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    return ClapConfig().to_dict(), {
        "text_config": ClapTextConfig().to_dict(),
        "audio_config": ClapAudioConfig().to_dict(),
    }


_BACKBONE_DEFAULTS = {
    ("audio", "muq"): _defaults_of_muq,
    ("text", "roberta"): _defaults_of_roberta,
    ("audio", "clap"): _defaults_of_clap,
    ("text", "clap"): _defaults_of_clap,
}


def _check_value(where: str, value: Any, default: Any) -> None:
    """``value`` must have the JSON type of ``default`` (ints pass for floats; None defaults take any)."""
    if default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        return
    if not ok:
        expected = type(default).__name__ if not isinstance(default, tuple) else "list"
        raise InputTypeError(f"{where} must be {expected}, got {type(value).__name__} ({value!r})")


def _check_keys(where: str, data: Any, defaults: dict[str, Any], nested: dict[str, dict[str, Any]]) -> None:
    if not isinstance(data, dict):
        raise InputTypeError(f"{where} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(defaults) - set(nested))
    if unknown:
        raise InputError(
            f"{where} has unknown key(s) {unknown}; the backbone would silently ignore them "
            "(check the spelling against the backbone's config class)"
        )
    for key, value in data.items():
        if key in nested and nested[key]:
            _check_keys(f"{where}.{key}", value, nested[key], {})
        elif key in nested:  # free-form dict (MuQ's normalisation stats): numbers only
            if not isinstance(value, dict):
                raise InputTypeError(f"{where}.{key} must be a JSON object, got {type(value).__name__}")
            for k, v in value.items():
                _check_value(f"{where}.{key}.{k}", v, 0.0)
        else:
            _check_value(f"{where}.{key}", value, defaults[key])


def check_backbone_configs(config: DeRAMOSConfig) -> None:
    """Validate the backbone dicts of a config against the backbones' own config classes.

    The config classes of transformers/MuQ accept unknown keyword arguments silently, so a typo
    in a checkpoint's ``backbone`` dict would otherwise build a different network. Raises
    ValueError (unknown key) or TypeError (wrong type) naming the key, e.g.
    ``config.text_encoder.backbone.hidden_size``.
    """
    for side, enc in (("audio", config.audio_encoder), ("text", config.text_encoder)):
        where = f"config.{side}_encoder"
        if enc.name_or_path is not None and not isinstance(enc.name_or_path, str):
            raise InputTypeError(f"{where}.name_or_path must be str, got {type(enc.name_or_path).__name__}")
        if enc.backbone is None:
            continue
        defaults = _BACKBONE_DEFAULTS.get((side, enc.kind))
        if defaults is None:
            continue
        top, nested = defaults()
        _check_keys(f"{where}.backbone", enc.backbone, top, nested)
