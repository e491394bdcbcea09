"""Append-only JSONL output that survives being killed: whole lines only, resumable.

A killed writer can leave at most one torn line, at the end of the file (each batch of rows is
one ``write`` of whole lines). ``read_rows`` drops it, and by default cuts it off the file so
later appends start on a fresh line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes
from .errors import InputError


def json_object(
    line: str, where: str, error: type[InputError] = InputError, hint: str = ""
) -> dict[str, Any]:
    """One JSON line -> its object, or ``error`` naming ``where`` (``file:line``) for text that is not
    JSON or JSON that is not an object; ``hint`` ends the message (what to do about it)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise error(f"{where}: not valid JSON ({err.msg} at column {err.colno}){hint}") from None
    if not isinstance(record, dict):
        raise error(f"{where}: expected a JSON object, got {type(record).__name__}{hint}")
    return record


def read_rows(path: str | os.PathLike, repair: bool = True) -> list[dict[str, Any]]:
    """Rows of a JSONL file written by ``append_rows`` ([] when the file does not exist).

    Args:
        repair: cut a torn last line off the file. Pass False to read a file another process
            may be appending to (the torn line is then only skipped).
    Raises:
        ValueError naming the file and line when a complete line is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # killed mid-write: drop the partial line so appends stay well-formed
        if repair:
            with open(path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        data = data[:end]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err}); remove the file to start over") from err
    rows = []
    # split on "\n" only: str.splitlines would also split inside strings holding U+2028 or U+0085,
    # which json.dumps(ensure_ascii=False) writes unescaped
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        row = json_object(line, f"{path}:{n}", hint="; remove the file to start over")
        rows.append(row)
    return rows


def encode_rows(rows: Iterable[dict[str, Any]]) -> bytes:
    """Rows -> UTF-8 JSON lines (non-finite floats are refused: they are not JSON)."""
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows).encode()


def append_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Append rows as one write of whole lines, then fsync, so finished rows are on disk.

    A newly created file also has its folder entry synced, so it survives a crash too.
    """
    if not rows:
        return
    path = Path(path)
    payload = encode_rows(rows)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(payload)
        while view:  # a regular-file write is rarely short, but never assume it
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def write_rows(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` with exactly ``rows`` atomically (temporary file + rename)."""
    atomic_write_bytes(Path(path), encode_rows(rows))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on this platform/filesystem: nothing more to do
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
