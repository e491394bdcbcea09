"""The run folder's bookkeeping: what a run was made from, resuming it, starting over, cleaning up.

``train_config.json`` holds the recipe and ``data.json`` a fingerprint of the training and
validation clips (ids, prompts, ratings, systems). A rerun into the same folder resumes only when
both match, except ``max_epochs`` and ``patience``: raising them extends a finished run (each epoch's
randomness comes from ``(seed, epoch)``, so the result equals a run started with the new values).
``overwrite=True`` starts over instead: it removes what a run writes (the feature cache is kept;
its files are keyed by content). A first start that fails before its first epoch finished leaves
no folder behind (only a completed feature cache, which a rerun reuses).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes, checkpoint_sha256
from ..data import Example
from ..errors import InputError
from .config import TrainConfig
from .state import LAST, state_dir

CONFIG_FILE = "train_config.json"
DATA_FILE = "data.json"
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIRS = ("best_loss", "best_mi_sys_srcc", "best_combined")
# TrainConfig fields a rerun may raise to extend a finished run
EXTENSIBLE = ("max_epochs", "patience")


def data_record(train: Sequence[Example], val: Sequence[Example], config: TrainConfig) -> dict[str, Any]:
    """What ``data.json`` holds: per split its name, clip count and a sha256 of its clips' contents."""

    def one(examples: Sequence[Example], split: str) -> dict[str, Any]:
        h = hashlib.sha256()
        for ex in examples:
            h.update(json.dumps([ex.wav_id, ex.prompt, ex.mi, ex.ta, ex.system]).encode() + b"\n")
        return {"split": split, "clips": len(examples), "sha256": h.hexdigest()}

    record = {"train": one(train, config.train_split), "validation": one(val, config.val_split)}
    if config.init_from is not None:  # the starting judge by its files, not by the path given
        record["init"] = {"path": config.init_from, "sha256": checkpoint_sha256(config.init_from)}
    return record


def _mismatch(run_dir: Path, config: TrainConfig, record: dict[str, Any]) -> str | None:
    """Why the run in ``run_dir`` cannot be resumed with ``config`` and this data (None if it can)."""
    saved = TrainConfig.load(run_dir / CONFIG_FILE)
    old, new = saved.result_fields(), config.result_fields()
    path = run_dir / DATA_FILE
    before = json.loads(path.read_text()) if path.is_file() else None
    by_hash = before is not None and "init" in before and "init" in record
    skip = {*EXTENSIBLE, "init_from"} if by_hash else set(EXTENSIBLE)
    diff = sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))
    if diff:
        return f"holds a run with a different configuration (differs in {diff})"
    if by_hash and before["init"].get("sha256") != record["init"]["sha256"]:
        return (
            f"holds a run started from another --init checkpoint ({before['init'].get('path')!r}, sha256 "
            f"{str(before['init'].get('sha256'))[:12]} then; {record['init']['path']!r}, sha256 "
            f"{record['init']['sha256'][:12]} now)"
        )
    if before is not None:
        for part in ("train", "validation"):
            if before.get(part) != record[part]:
                b, r = before.get(part) or {}, record[part]
                return (
                    f"holds a run trained on other {part} data ({b.get('clips')} clips of split "
                    f"{b.get('split')!r} then, {r['clips']} clips of split {r['split']!r} now, or other "
                    "prompts/ratings)"
                )
    return None


def prepare(run_dir: Path, config: TrainConfig, record: dict[str, Any], overwrite: bool) -> None:
    """Check that ``run_dir`` can take this run (or clear it with ``overwrite``), then record it."""
    if overwrite:
        remove_run_files(run_dir)
    elif (run_dir / CONFIG_FILE).is_file():
        why = _mismatch(run_dir, config, record)
        if why is not None:
            raise InputError(
                f"{run_dir} {why}; resume it with the same settings and data, start over with "
                "--overwrite (overwrite=True), or choose another --out folder"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / CONFIG_FILE, config.to_json().encode())
    atomic_write_bytes(run_dir / DATA_FILE, json.dumps(record, indent=1).encode())


def remove_run_files(run_dir: Path) -> None:
    """Remove what a run writes in ``run_dir`` (not the feature cache, nor files of the user's)."""
    if not run_dir.is_dir():
        return
    for name in (CONFIG_FILE, DATA_FILE, LOG_FILE, SUMMARY_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for name in (*CHECKPOINT_DIRS, LAST, f"{LAST}.old"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for tmp in run_dir.glob(".last-*"):
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def cleanup_failed_start(run_dir: Path, is_main: bool) -> Iterator[None]:
    """If the block fails before any epoch of a folder this call created has finished, remove it.

    A completed feature cache is kept (then the folder stays, holding only ``features/``).
    """
    created = is_main and not run_dir.exists()
    try:
        yield
    except BaseException:
        if created and run_dir.is_dir() and state_dir(run_dir) is None:
            remove_run_files(run_dir)
            for folder in (run_dir / "features", run_dir):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only when empty
        raise
