"""The output file of a rating session: one JSON line per answer, never lost, never twice.

MOS lines are training-manifest lines (``deramos train --data ratings.jsonl`` reads them)::

    {"path": "clips/a.wav", "prompt": "...", "mi": 4, "ta": 3, "system": "gen_a", "split": "train",
     "rater": "alice", "id": "a@alice"}

``path`` is relative to the output file's folder; ``id`` is ``<clip id>@<rater>``, so each line
is one rating and ids stay unique; ``split`` is the clip's manifest split, else ``"dev"`` for a
fixed hash-chosen fraction of clips and ``"train"`` for the rest (all raters of a clip agree).

A/B lines record which clip the rater heard as A and which as B::

    {"item": "p0_c0|p0_c1", "prompt": "...", "a": {"id": "p0_c1", "path": "...", "system": "..."},
     "b": {"id": "p0_c0", ...}, "choice": "a", "rater": "alice"}

``choice`` is ``"a"``, ``"b"`` or ``"tie"``. ``deramos rate --export-pairs`` turns them into a DPO
pairs dataset (see :mod:`deramos_reward.rating.export`).

Writing: every answer is checked, then appended as one line with one ``write`` + ``fsync`` under a
lock that also guards the "already rated?" check, so concurrent raters never lose or duplicate a
line. While the session runs the file is held with an exclusive ``flock``: a second server on the
same file stops with an error. On start the lines already there are read (a torn last line left by
a crash is cut), and every rater skips what they already answered.

What decides the answers' meaning is recorded beside the file at the first answer, in
``<out>.session.json``: the mode, and for MOS the ``dev_fraction`` (which clips are ``dev``), for
A/B the ``seed`` (which pairs are drawn), plus what the caller adds (``settings``). A session on the
same file with any of these changed is refused, naming it; so is one whose clips would now fall in
another split than the lines already written say (another ``dev_fraction``, or a manifest whose
``split`` changed): a clip's ratings never end up in both ``train`` and ``dev``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes
from ..errors import InputError, InputTypeError
from ..jsonl import append_rows, read_rows
from .clips import Clip, Item, check_rater, dev_split, rater_order, swapped

try:  # POSIX; elsewhere the single-server rule is not enforced
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

CHOICES = ("a", "b", "tie")


class AlreadyRated(Exception):
    """This rater already answered this item (nothing was written)."""


class UnknownItem(KeyError):
    """The item id is not an item of this session."""


def _score(answer: dict, key: str) -> int:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValueError(f"{key!r} must be an integer from 1 to 5, got {value!r}")
    return value


def check_answer(mode: str, answer: Any) -> dict[str, Any]:
    """``{"mi": 1-5, "ta": 1-5}`` (MOS) or ``{"choice": "a"|"b"|"tie"}`` (A/B); anything else is a ValueError."""
    if not isinstance(answer, dict):
        raise ValueError(f"the answer must be a JSON object, got {type(answer).__name__}")
    expected = ("mi", "ta") if mode == "mos" else ("choice",)
    if sorted(answer) != sorted(expected):
        raise ValueError(f"a {mode} answer has exactly the keys {list(expected)}, got {sorted(answer)}")
    if mode == "mos":
        return {"mi": _score(answer, "mi"), "ta": _score(answer, "ta")}
    if answer["choice"] not in CHOICES:
        raise ValueError(f"'choice' must be one of {CHOICES}, got {answer['choice']!r}")
    return {"choice": answer["choice"]}


class RatingLog:
    """Answers of every rater of one session, backed by the output JSONL file.

    Use as a context manager (or call :meth:`open` / :meth:`close`); thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str,
        clips: list[Clip],
        items: list[Item],
        seed: int = 0,
        dev_fraction: float = 0.2,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(dev_fraction, bool) or not isinstance(dev_fraction, (int, float)):
            raise InputTypeError(f"dev_fraction must be a number in [0, 1), got {dev_fraction!r}")
        if not 0 <= dev_fraction < 1:
            raise InputError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
        self.path = Path(os.path.abspath(os.fspath(path)))
        self.mode, self.clips, self.items = mode, clips, items
        self.seed, self.dev_fraction = seed, dev_fraction
        own = {"dev_fraction": dev_fraction} if mode == "mos" else {"seed": seed}
        self.settings = json.loads(json.dumps({"mode": mode, **own, **(settings or {})}))
        self.settings_path = self.path.with_name(self.path.name + ".session.json")
        self.by_id = {item.id: item for item in items}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._recorded = False
        self._done: dict[str, set[str]] = {}
        self._orders: dict[str, list[Item]] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    def open(self) -> RatingLog:
        folder = self.path.parent
        if not folder.is_dir():
            raise InputError(f"the folder of --out {str(self.path)!r} does not exist")
        if self.path.exists() and not self.path.is_file():
            raise InputError(f"--out {str(self.path)!r} is not a file")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(
                    f"another deramos rate is writing to {str(self.path)!r}; stop it or use another --out"
                ) from None
        self._fd = fd
        try:
            rows = read_rows(self.path)
            keys = [self._key(row, n) for n, row in enumerate(rows, start=1)]
            if rows:  # a record beside a file without answers describes nothing
                self._check_settings()
            for n, (row, (rater, item)) in enumerate(zip(rows, keys), start=1):
                self._check_split(row, item, n)
                self._done.setdefault(rater, set()).add(item)
        except BaseException:
            self.close()
            raise
        return self

    def _check_settings(self) -> None:
        """InputError when the file was rated with other settings (its ``.session.json``)."""
        if not self.settings_path.is_file():
            return
        try:
            stored = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{self.settings_path} is not valid JSON ({err}); remove it") from err
        changed = sorted(k for k in set(stored) | set(self.settings) if stored.get(k) != self.settings.get(k))
        if changed:
            what = "; ".join(
                f"{k} (--{k.replace('_', '-')}): {stored.get(k)!r} then, {self.settings.get(k)!r} now"
                for k in changed
            )
            raise InputError(
                f"{self.path} was rated with other settings ({what}); resume with the same settings, "
                "or use another --out"
            )
        self._recorded = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> RatingLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, row: dict, n: int) -> tuple[str, str]:
        """(rater, item id) of an existing line; a line of the other mode is an error."""
        where = f"{self.path}:{n}"
        is_ab = "choice" in row
        if is_ab != (self.mode == "ab"):
            other = "A/B votes" if is_ab else "MOS ratings"
            raise InputError(
                f"{where}: this file holds {other}; use --mode {'ab' if is_ab else 'mos'} or another --out"
            )
        rater = row.get("rater")
        item = row.get("item") if is_ab else str(row.get("id", "")).rpartition("@")[0]
        if not isinstance(rater, str) or not isinstance(item, str) or not item:
            raise InputError(f"{where}: not a line written by deramos rate (no rater or item id)")
        return rater, item

    def _check_split(self, row: dict, item: str, n: int) -> None:
        """InputError when a MOS line's clip would now fall in another split than the line says."""
        if self.mode != "mos" or item not in self.by_id:
            return
        now = dev_split(self.clips[self.by_id[item].clips[0]], self.dev_fraction)
        if row.get("split") != now:
            raise InputError(
                f"{self.path}:{n}: clip {item!r} was rated in split {row.get('split')!r}, this session would "
                f"put it in {now!r} (another --dev-fraction, or another split in the manifest); resume with "
                "the settings it was rated with, or use another --out"
            )

    # ---- queries ---------------------------------------------------------------------------
    def order(self, rater: str) -> list[Item]:
        with self._lock:
            if rater not in self._orders:
                self._orders[rater] = rater_order(self.items, rater, self.seed)
            return self._orders[rater]

    def progress(self, rater: str) -> tuple[int, int]:
        """(items of this session the rater answered, items in the session)."""
        with self._lock:
            done = self._done.get(rater, set())
            return sum(1 for i in self.by_id if i in done), len(self.items)

    def next_item(self, rater: str) -> Item | None:
        """The first item of the rater's order they have not answered (None when finished)."""
        order = self.order(rater)
        with self._lock:
            done = self._done.get(rater, set())
            return next((item for item in order if item.id not in done), None)

    def shown(self, rater: str, item: Item) -> tuple[Clip, ...]:
        """The item's clips in the order this rater sees them (A, B in A/B mode)."""
        clips = tuple(self.clips[i] for i in item.clips)
        return clips[::-1] if len(clips) == 2 and swapped(rater, item.id, self.seed) else clips

    # ---- writing ---------------------------------------------------------------------------
    def _relative(self, clip: Clip) -> str:
        try:
            return os.path.relpath(clip.file, os.path.realpath(self.path.parent))
        except ValueError:  # another drive (Windows)
            return clip.file

    def _row(self, rater: str, item: Item, answer: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "mos":
            clip = self.clips[item.clips[0]]
            return {
                "path": self._relative(clip),
                "prompt": clip.prompt,
                "mi": answer["mi"],
                "ta": answer["ta"],
                "system": clip.system,
                "split": dev_split(clip, self.dev_fraction),
                "rater": rater,
                "id": f"{clip.id}@{rater}",
            }
        a, b = self.shown(rater, item)
        side = {c: {"id": c.id, "path": self._relative(c), "system": c.system} for c in (a, b)}
        return {"item": item.id, "prompt": item.prompt, "a": side[a], "b": side[b], **answer, "rater": rater}

    def record(self, rater: str, item_id: str, answer: Any) -> tuple[int, int]:
        """Check and append one answer; -> the rater's new progress.

        Raises:
            ValueError: bad rater id or answer. UnknownItem: no such item in this session.
            AlreadyRated: the rater answered this item before (nothing is written).
        """
        if self._fd is None:
            raise RuntimeError("the rating log is not open")
        check_rater(rater)
        if not isinstance(item_id, str) or item_id not in self.by_id:
            raise UnknownItem(item_id)
        row = self._row(rater, self.by_id[item_id], check_answer(self.mode, answer))
        with self._lock:
            done = self._done.setdefault(rater, set())
            if item_id in done:
                raise AlreadyRated(item_id)
            if not self._recorded:  # what the answers mean, before the first of them
                text = json.dumps(self.settings, indent=1) + "\n"
                atomic_write_bytes(self.settings_path, text.encode())
                self._recorded = True
            append_rows(self.path, [row])
            done.add(item_id)
        return self.progress(rater)
