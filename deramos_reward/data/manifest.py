"""JSONL manifests: the one reader behind ``deramos score``, ``deramos train`` and ``deramos eval``.

One JSON object per line::

    {"path": "gen_a/clip1.wav", "prompt": "a calm piano piece", "mi": 3.8, "ta": 4.2}

Keys: ``path`` and ``prompt`` (required); ``mi``, ``ta`` (numbers, or null / absent when the clip
is unlabeled); ``system`` (default: the name of the folder holding the audio file, so clips
organised as ``<generator>/<clip>.wav`` get per-generator system metrics); ``split`` (optional);
``id`` (default: ``path`` as written, without its extension); ``rater`` (optional: who gave the
rating; ``deramos rate`` writes one line per clip and rater, with ``id`` = ``<clip id>@<rater>``).
Relative paths are resolved against the manifest's folder. Blank lines are skipped; unknown keys
are an error (catches ``"MI"``). Lines are split on ``"\\n"`` only, so a prompt may hold U+2028 or U+0085.

``read_manifest_entries`` checks the format of every line (the scorer needs no more: a missing
audio file or an empty prompt becomes that input's error row). ``read_manifest`` /
``load_manifest`` (rated clips for training and evaluation) also require every audio file to
exist, every prompt to be non-empty, clip ids to be unique, and every rating to lie on the rating
scale (1-5 unless ``rating_scale=(low, high)`` is given; other scales are mapped onto 1-5).

Splits: if no line has a ``split`` key, every requested split gets all lines (keep separate
manifests for training and validation). If any line has one, every line must, and a split is
the lines whose ``split`` equals it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..jsonl import json_object
from ..validation import check_file
from .musiceval import DataFormatError, Example, MissingDataError, load_musiceval
from .ratings import check_rating_scale, to_mos

MANIFEST_KEYS = ("path", "prompt", "mi", "ta", "system", "split", "id", "rater")


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line. path: as written; file: absolute path of the audio; line: 1-based number.

    mi, ta: as written (None when absent or null), before any rating-scale mapping.
    """

    manifest: str
    line: int
    path: str
    file: str
    prompt: str
    mi: float | None
    ta: float | None
    system: str | None
    split: str | None
    id: str | None
    rater: str | None = None

    @property
    def where(self) -> str:
        return f"{self.manifest}:{self.line}"


def _label(record: dict, key: str, where: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataFormatError(f"{where}: {key!r} must be a finite number or null, got {value!r}")
    return float(value)


def _string(record: dict, key: str, where: str, required: bool, empty_ok: bool = False) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise DataFormatError(f"{where}: missing required key {key!r}")
        return None
    if not isinstance(value, str) or not (empty_ok or value.strip()):
        raise DataFormatError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def json_record(line: str, where: str, keys: Sequence[str]) -> dict:
    """One JSONL line -> its object; DataFormatError naming ``where`` (file:line) for text that is not
    JSON, a value that is not an object, or a key not in ``keys`` (catches ``"MI"`` for ``"mi"``)."""
    record = json_object(line, where, DataFormatError)
    unknown = sorted(set(record) - set(keys))
    if unknown:
        raise DataFormatError(f"{where}: unknown key(s) {unknown}; known keys: {list(keys)}")
    return record


def _entry(manifest: str, line_no: int, line: str) -> ManifestEntry:
    where = f"{manifest}:{line_no}"
    record = json_record(line, where, MANIFEST_KEYS)
    rel = _string(record, "path", where, required=True)
    folder = os.path.dirname(manifest)
    return ManifestEntry(
        manifest=manifest,
        line=line_no,
        path=rel,
        file=os.path.normpath(os.path.join(folder, os.path.expanduser(rel))),
        prompt=_string(record, "prompt", where, required=True, empty_ok=True),
        mi=_label(record, "mi", where),
        ta=_label(record, "ta", where),
        system=_string(record, "system", where, required=False),
        split=_string(record, "split", where, required=False),
        id=_string(record, "id", where, required=False),
        rater=_string(record, "rater", where, required=False),
    )


def read_manifest_entries(path: str | os.PathLike) -> list[ManifestEntry]:
    """Every non-blank line of a manifest, format-checked (see the module doc), in file order."""
    path = os.path.abspath(check_file(path, "manifest", missing=MissingDataError))
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise DataFormatError(
            f"manifest {path!r} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    entries = [
        _entry(path, n, line.strip()) for n, line in enumerate(text.split("\n"), start=1) if line.strip()
    ]
    if not entries:
        raise DataFormatError(f"manifest {path!r} has no entries")
    return entries


def read_manifest(
    path: str | os.PathLike, rating_scale: Sequence[float] | None = None
) -> list[tuple[Example, str | None]]:
    """Rated clips of a manifest: ``(Example, split or None)`` per non-blank line.

    Labels are checked against ``rating_scale`` (default 1-5) and mapped onto 1-5.
    """
    scale = check_rating_scale(rating_scale)
    rows, seen = [], {}
    entries = read_manifest_entries(path)
    for e in entries:
        if not e.prompt.strip():
            raise DataFormatError(f"{e.where}: 'prompt' must be a non-empty string, got {e.prompt!r}")
        if not os.path.isfile(e.file):
            kind = "is a folder, not an audio file" if os.path.isdir(e.file) else "does not exist"
            raise MissingDataError(f"{e.where}: audio file {e.file!r} {kind}")
        system = e.system or os.path.basename(os.path.dirname(e.file)) or "unknown"
        wav_id = e.id or os.path.splitext(e.path)[0]
        if wav_id in seen:
            raise DataFormatError(f"{e.where}: clip id {wav_id!r} already used on line {seen[wav_id]}")
        seen[wav_id] = e.line
        mi, ta = to_mos(e.mi, scale, e.where, "MI"), to_mos(e.ta, scale, e.where, "TA")
        rows.append((Example(wav_id, e.file, e.prompt, mi, ta, system), e.split))
    with_split = [e for e in entries if e.split is not None]
    if with_split and len(with_split) != len(entries):
        first = next(e for e in entries if e.split is None)
        raise DataFormatError(
            f"{first.where}: this line has no 'split' but others do; give every line a split or none"
        )
    return rows


def load_manifest(
    path: str | os.PathLike, split: str | None = None, rating_scale: Sequence[float] | None = None
) -> list[Example]:
    """Examples of a JSONL manifest, optionally restricted to one split (see the module doc)."""
    rows = read_manifest(path, rating_scale)
    if split is None or all(s is None for _, s in rows):
        return [example for example, _ in rows]
    chosen = [example for example, s in rows if s == split]
    if not chosen:
        names = sorted({s for _, s in rows})
        raise DataFormatError(
            f"manifest {os.fspath(path)!r} has no lines with split {split!r}; it has {names}"
        )
    return chosen


def load_dataset_split(
    data: str | os.PathLike, split: str | None, rating_scale: Sequence[float] | None = None
) -> list[Example]:
    """One split of either a MusicEval-layout folder or a JSONL manifest file.

    Args:
        data: a MusicEval root folder, or a manifest file (``.jsonl``/``.json``/any file).
        split: ``"train"``, ``"dev"``, ``"test"``, ...; for a folder it names
            ``sets/{split}_mos_list.txt`` (required); for a manifest see the module doc
            (``None`` = all lines).
        rating_scale: ``(low, high)`` of the labels (default 1-5); they are mapped onto 1-5 and a
            label outside it is an error naming the file and line.
    """
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be a path to a MusicEval folder or a manifest, got {type(data).__name__}")
    path = os.fspath(data)
    if os.path.isdir(path):
        if split is None:
            raise DataFormatError(
                f"split is required for the MusicEval folder {path!r} (e.g. 'train', 'dev', 'test')"
            )
        return load_musiceval(path, split, rating_scale)
    if os.path.isfile(path):
        return load_manifest(path, split, rating_scale)
    raise MissingDataError(f"data {path!r} is neither a MusicEval folder nor a manifest file")
