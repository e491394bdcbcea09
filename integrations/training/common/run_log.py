"""Log rows of a fine-tuning run: a JSONL file and a progress bar (reporting integrations such as
TensorBoard are callbacks of the trainer base, fed the same rows)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from deramos_reward.integrations.training.common.checkpoints import process_rank
from deramos_reward.jsonl import append_rows, write_rows

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
    """Log rows of a training run: a JSONL file (main process) and a tqdm bar.

    Args:
        path: the JSONL file (None: no file). It is rewritten with ``rows`` at start, so a resumed run
            keeps exactly the rows up to its checkpoint and drops rows logged after it.
        total, initial: the bar's total steps and starting step.
        rows: rows to start from (``TrainingState.logs`` when resuming, else []).
        accelerator: for the main-process check; None = one process.
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
        postfix: Sequence[str] = ("loss",),
    ):
        _, _, self.is_main = process_rank(accelerator)
        local_main = accelerator is None or accelerator.is_local_main_process
        self.path = None if path is None else Path(path)
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]
        self.accelerator = accelerator
        self.postfix = tuple(postfix)
        if self.is_main and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_rows(self.path, self.rows)
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not local_main)

    def log(self, row: Mapping[str, Any], step: int) -> dict[str, Any]:
        """Append ``{"step": step, **row}`` (non-finite floats become null) and report it; returns the row."""
        entry = {"step": int(step), **{k: _json_value(v) for k, v in row.items()}}
        self.rows.append(entry)
        if self.is_main and self.path is not None:
            append_rows(self.path, [entry])
        shown = {k: f"{entry[k]:.4g}" for k in self.postfix if isinstance(entry.get(k), (int, float))}
        if shown:
            self.bar.set_postfix(shown)
        return entry

    def advance(self, n: int = 1) -> None:
        """Move the bar ``n`` steps."""
        self.bar.update(n)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
