"""Reading a fine-tuning run folder from a test while the run writes it."""

from __future__ import annotations

import json
from pathlib import Path


def latest_step(run: Path) -> int | None:
    """The step of the newest complete ``checkpoint-<step>`` in ``run`` (None when there is none yet).
    Tolerates the run removing an older checkpoint while this reads."""
    steps = []
    for folder in Path(run).glob("checkpoint-*"):
        try:
            steps.append(json.loads((folder / "trainer_state.json").read_text())["step"])
        except (OSError, ValueError, KeyError):
            continue  # being written, renamed or removed right now
    return max(steps, default=None)
