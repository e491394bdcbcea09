"""``convert_reference_checkpoint``: the authors' ``torch.save`` file -> a ``DeRAMOS`` checkpoint folder.

The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so no
code in it runs. Its weights are renamed (``keys.map_keys``), checked against the architecture the
variant implies, and saved as ``config.json`` + ``model.safetensors`` like any other checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from ..checkpoint import atomic_write_bytes, check_backbone_configs, check_state
from ..config import DeRAMOSConfig
from ..encoders.loading import ROBERTA_HUB_ID
from ..errors import InputError, InputTypeError
from ..model import DeRAMOS
from .keys import BIN_CENTRES, POSITION_TABLE, VARIANTS, map_keys

PROVENANCE_NAME = "converted_from.json"
# Where a saved state_dict may sit inside the file, as the authors' own loader accepts it.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict")


def convert_reference_checkpoint(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    variant: str = "deramos",
    config: DeRAMOSConfig | dict | str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a checkpoint of the authors' code into a checkpoint folder; returns the folder.

    Args:
        path: the ``.pth`` the authors' ``train.py`` wrote (``torch.save(net.state_dict())``; a
            dict holding it under ``state_dict`` / ``model_state_dict`` works too).
        out_dir: the folder to write (``config.json``, ``model.safetensors``, and
            ``converted_from.json`` naming the source file, its SHA-256 and the variant).
        variant: ``"deramos"`` (DeRA-MOS: cross-attention on the raw MuQ frames, plus the SAMA
            alignment pool) or ``"astar"`` (ASTAR-NTU's ``muq_roberta_transformer_dist``:
            cross-attention on the MI transformer's output).
        config: a ``DeRAMOSConfig`` (or its dict, or a JSON file) giving the backbones' configs when
            the checkpoint is not paper-size; default: MuQ-large + roberta-base. Its backbones are
            built from their ``backbone`` dicts and get the checkpoint's weights.
        overwrite: replace a non-empty ``out_dir``.
    """
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    out = _check_out_dir(out_dir, overwrite)
    state = read_reference_state(path)
    cfg = reference_config(config, variant)
    model = DeRAMOS(cfg)
    ours = model.state_dict()
    _check_extras(state, cfg, model.audio_encoder.dim)
    mapped = map_keys(state, ours, variant)
    check_state(ours, {**ours, **mapped}, f"reference checkpoint {os.fspath(path)!r}")
    model.load_state_dict(mapped, strict=False)
    provenance = {"source": os.path.abspath(path), "sha256": _sha256(Path(path)), "variant": variant}
    staging = out.parent / f".{out.name}.converting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        atomic_write_bytes(staging / PROVENANCE_NAME, json.dumps(provenance, indent=2).encode())
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def read_reference_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict in a ``torch.save`` file, read without running any code in it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"reference checkpoint {str(path)!r} is a folder; expected the .pth file the authors' "
            "train.py saved with torch.save(net.state_dict())"
        )
    if not path.is_file():
        raise InputError(f"reference checkpoint {str(path)!r} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"reference checkpoint {str(path)!r} holds more than tensors and plain containers "
            f"(objects that would run code when unpickled), so it was refused and nothing in it ran: "
            f"{_first_line(err)}"
        ) from err
    except Exception as err:  # truncated or foreign files fail in many ways inside torch.load
        raise InputError(
            f"reference checkpoint {str(path)!r} is not a readable torch.save file "
            f"({type(err).__name__}: {_first_line(err)}); is it complete?"
        ) from err
    state = loaded
    if isinstance(loaded, dict):
        nested = [k for k in NESTED_STATE_KEYS if isinstance(loaded.get(k), dict)]
        state = loaded[nested[0]] if nested else loaded
    if not isinstance(state, dict) or not state:
        raise InputError(
            f"reference checkpoint {str(path)!r} holds no state_dict (got {type(state).__name__})"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(
            f"reference checkpoint {str(path)!r} is not a state_dict of tensors: entries {bad[:5]} are not "
            f"(top-level keys: {sorted(map(str, state))[:8]})"
        )
    return state


def reference_config(config: DeRAMOSConfig | dict | str | os.PathLike | None, variant: str) -> DeRAMOSConfig:
    """The architecture of the authors' ``variant`` on ``config``'s backbones (default: the paper's)."""
    if config is None:
        cfg = DeRAMOSConfig.paper_architecture()
        cfg.text_encoder.tokenizer = ROBERTA_HUB_ID  # the checkpoint holds roberta-base's weights only
    elif isinstance(config, DeRAMOSConfig):
        cfg = DeRAMOSConfig.from_dict(config.to_dict())
    elif isinstance(config, dict):
        cfg = DeRAMOSConfig.from_dict(config)
    elif isinstance(config, (str, os.PathLike)):
        try:
            cfg = DeRAMOSConfig.from_json(Path(config).read_text())
        except OSError as err:
            raise InputError(f"config {os.fspath(config)!r} could not be read: {err.strerror}") from err
    else:
        raise InputTypeError(
            f"config must be a DeRAMOSConfig, a dict or a JSON file, got {type(config).__name__}"
        )
    for side, enc, kind in (("audio", cfg.audio_encoder, "muq"), ("text", cfg.text_encoder, "roberta")):
        if enc.kind != kind:
            raise InputError(
                f"config.{side}_encoder.kind must be {kind!r} for the authors' model, got {enc.kind!r}"
            )
        if enc.backbone is None:
            raise InputError(
                f"config.{side}_encoder must build its backbone from a `backbone` config dict, not load "
                f"{enc.name_or_path!r}: the reference checkpoint carries the backbone's weights"
            )
    check_backbone_configs(cfg)
    cfg.attentive_pooling, cfg.positional_encoding, cfg.ta_residual = "linear", False, False
    cfg.ta_keys = "frames" if variant == "deramos" else "mi"
    cfg.alignment_pool = variant == "deramos"
    cfg.ta_pooling = "mean"  # what the reference computes for a prompt without padding
    cfg.validate()
    return cfg


def _check_extras(state: dict[str, torch.Tensor], cfg: DeRAMOSConfig, audio_dim: int) -> None:
    """The two buffers the reference saves beside its weights must be what this package assumes."""
    table = state.get(POSITION_TABLE)
    if table is not None and (table.dim() != 3 or table.shape[1] != 1 or table.shape[2] != audio_dim):
        raise InputError(
            f"reference checkpoint's {POSITION_TABLE} has shape {tuple(table.shape)}; expected "
            f"(max_len, 1, {audio_dim}) for audio frames of width {audio_dim}"
        )
    centres = state.get(BIN_CENTRES)
    expected = torch.linspace(cfg.score_low, cfg.score_high, cfg.n_bins)
    if centres is not None and (
        centres.shape != expected.shape or not torch.allclose(centres.float(), expected)
    ):
        raise InputError(
            f"reference checkpoint's {BIN_CENTRES} are {centres.tolist()}; the config gives {cfg.n_bins} bins "
            f"from {cfg.score_low} to {cfg.score_high}"
        )


def _check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {str(out)!r} is a file; expected a folder to write the checkpoint into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"output folder {str(out)!r} is not empty; pass --overwrite (overwrite=True) to replace it"
        )
    return out


def _sha256(path: Path) -> str:
    """The file's SHA-256, as ``sha256sum`` prints it (so a user can check the source they hold)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
