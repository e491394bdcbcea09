"""A run's settings: recorded at its start, compared when it is resumed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deramos_reward.checkpoint import atomic_write_bytes
from deramos_reward.errors import InputError

# ------------------------------------------------------------------------------------ run settings


SETTINGS_FILE = "settings.json"
"""The file in a run folder that records its settings."""


def check_run_settings(
    run_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    *,
    ignore: Iterable[str] = (),
    filename: str = SETTINGS_FILE,
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
