"""Append-only JSONL output that survives being killed: whole lines only, resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file written by ``append_rows``; a torn last line is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # killed mid-write: drop the partial line so appends stay well-formed
        with open(path, "r+b") as f:
            f.truncate(end)
        data = data[:end]
    rows = []
    for n, line in enumerate(data.decode().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{n}: not a JSON line ({err}); remove the file to start over"
                ) from err
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows with one write, then flush and fsync, so finished rows are on disk."""
    if not rows:
        return
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
