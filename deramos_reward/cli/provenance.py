"""What produced a resumable output, so that a rerun with another model or setting is refused.

Each resumable command stores a small JSON record beside (or inside) its output: the identity of
the models it used (the path or hub id given, and a sha256 of the checkpoint's files) and the
settings that change its results. A rerun compares its own record with the stored one and refuses,
naming the first difference, unless it was asked to start over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes, checkpoint_sha256, files_sha256
from .options import CommandError


def sha256_of(paths: list[Path]) -> str:
    """sha256 over the names and bytes of ``paths``, in order."""
    return files_sha256(paths)


def checkpoint_identity(spec: str) -> dict[str, str]:
    """``{"path": spec, "sha256": ...}`` of a DeRA-MOS checkpoint (config.json + model.safetensors).

    A hub id is resolved through the local cache (downloaded when missing, as loading would).
    """
    return {"path": spec, "sha256": checkpoint_sha256(spec)}


def differences(stored: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """Keys whose values differ between two records (``ignore``d keys excepted), sorted."""

    def same(a: Any, b: Any) -> bool:  # a model is the same when its files are, wherever they lie
        if isinstance(a, dict) and isinstance(b, dict) and "sha256" in a and "sha256" in b:
            return a["sha256"] == b["sha256"]
        return a == b

    keys = (set(stored) | set(current)) - set(ignore)
    return sorted(k for k in keys if not same(stored.get(k), current.get(k)))


def describe(stored: dict[str, Any], current: dict[str, Any], key: str) -> str:
    """``key: OLD -> NEW`` for a message (model identities by their path and sha256 prefix)."""

    def show(value: Any) -> str:
        if isinstance(value, dict) and "sha256" in value:
            return f"{value.get('path')!r} (sha256 {str(value['sha256'])[:12]})"
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + "..."

    return f"{key}: {show(stored.get(key))} then, {show(current.get(key))} now"


def check(path: Path, current: dict[str, Any], output: str, ignore: tuple[str, ...] = ()) -> None:
    """CommandError when ``path`` holds a record that differs from ``current`` (one line)."""
    stored = read(path)
    if stored is None:
        return
    diff = differences(stored, current, ignore)
    if diff:
        raise CommandError(
            f"{output} was made with other settings ({describe(stored, current, diff[0])}"
            f"{f'; also {diff[1:]}' if len(diff) > 1 else ''}); use the same settings to resume it, "
            "--overwrite to start over, or another --out"
        )


def read(path: Path) -> dict[str, Any] | None:
    """The record stored at ``path`` (None when there is none)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CommandError(f"{path} is not a valid record ({err}); remove it or use --overwrite") from err
    if not isinstance(data, dict):
        raise CommandError(f"{path} is not a valid record (not a JSON object); remove it or use --overwrite")
    return data


def write(path: Path, record: dict[str, Any]) -> None:
    """Store ``record`` at ``path`` atomically (creating its folder)."""
    atomic_write_bytes(
        Path(os.fspath(path)), (json.dumps(record, indent=1, ensure_ascii=False) + "\n").encode()
    )
