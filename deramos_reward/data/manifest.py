"""Plain JSONL manifests, so users can train and evaluate on their own ratings.

One JSON object per line::

    {"path": "gen_a/clip1.wav", "prompt": "a calm piano piece", "mi": 3.8, "ta": 4.2}

Keys: ``path`` and ``prompt`` (required); ``mi``, ``ta`` (numbers, or null / absent when the clip
is unlabeled); ``system`` (default: the name of the folder holding the audio file, so clips
organised as ``<generator>/<clip>.wav`` get per-generator system metrics); ``split`` (optional);
``id`` (default: ``path`` as written, without its extension); ``rater`` (optional: who gave the
rating; ``deramos rate`` writes one line per clip and rater, with ``id`` = ``<clip id>@<rater>``).
Relative paths are resolved against the manifest's folder. Blank lines are skipped; unknown keys are an error (catches ``"MI"``).

Splits: if no line has a ``split`` key, every requested split gets all lines (keep separate
manifests for training and validation). If any line has one, every line must, and a split is
the lines whose ``split`` equals it.
"""

from __future__ import annotations

import json
import math
import os

from .musiceval import DataFormatError, Example, MissingDataError, load_musiceval

MANIFEST_KEYS = ("path", "prompt", "mi", "ta", "system", "split", "id", "rater")


def _label(record: dict, key: str, where: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataFormatError(f"{where}: {key!r} must be a finite number or null, got {value!r}")
    return float(value)


def _string(record: dict, key: str, where: str, required: bool) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise DataFormatError(f"{where}: missing required key {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def read_manifest(path: str | os.PathLike) -> list[tuple[Example, str | None]]:
    """Parse every line of a manifest: ``(Example, split or None)`` per non-blank line."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise MissingDataError(f"manifest {path!r} does not exist")
    folder = os.path.dirname(path)
    rows, seen = [], {}
    with open(path, encoding="utf-8-sig") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
            unknown = sorted(set(record) - set(MANIFEST_KEYS))
            if unknown:
                raise DataFormatError(f"{where}: unknown key(s) {unknown}; known keys: {list(MANIFEST_KEYS)}")
            rel = _string(record, "path", where, required=True)
            prompt = _string(record, "prompt", where, required=True)
            audio = os.path.normpath(os.path.join(folder, os.path.expanduser(rel)))
            if not os.path.isfile(audio):
                raise MissingDataError(f"{where}: audio file {audio!r} does not exist")
            system = _string(record, "system", where, required=False)
            if system is None:
                system = os.path.basename(os.path.dirname(audio)) or "unknown"
            mi, ta = _label(record, "mi", where), _label(record, "ta", where)
            split = _string(record, "split", where, required=False)
            _string(record, "rater", where, required=False)
            wav_id = _string(record, "id", where, required=False) or os.path.splitext(rel)[0]
            if wav_id in seen:
                raise DataFormatError(f"{where}: clip id {wav_id!r} already used on line {seen[wav_id]}")
            seen[wav_id] = line_no
            example = Example(wav_id, audio, prompt, mi, ta, system)
            rows.append((example, split, line_no))
    if not rows:
        raise DataFormatError(f"manifest {path!r} has no clips")
    with_split = [r for r in rows if r[1] is not None]
    if with_split and len(with_split) != len(rows):
        first = next(r for r in rows if r[1] is None)
        raise DataFormatError(
            f"{path}:{first[2]}: this line has no 'split' but others do; give every line a split or none"
        )
    return [(example, split) for example, split, _ in rows]


def load_manifest(path: str | os.PathLike, split: str | None = None) -> list[Example]:
    """Examples of a JSONL manifest, optionally restricted to one split (see the module doc)."""
    rows = read_manifest(path)
    if split is None or all(s is None for _, s in rows):
        return [example for example, _ in rows]
    chosen = [example for example, s in rows if s == split]
    if not chosen:
        names = sorted({s for _, s in rows})
        raise DataFormatError(
            f"manifest {os.fspath(path)!r} has no lines with split {split!r}; it has {names}"
        )
    return chosen


def load_dataset_split(data: str | os.PathLike, split: str | None) -> list[Example]:
    """One split of either a MusicEval-layout folder or a JSONL manifest file.

    Args:
        data: a MusicEval root folder, or a manifest file (``.jsonl``/``.json``/any file).
        split: ``"train"``, ``"dev"``, ``"test"``, ...; for a folder it names
            ``sets/{split}_mos_list.txt`` (required); for a manifest see the module doc
            (``None`` = all lines).
    """
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be a path to a MusicEval folder or a manifest, got {type(data).__name__}")
    path = os.fspath(data)
    if os.path.isdir(path):
        if split is None:
            raise ValueError(
                f"split is required for the MusicEval folder {path!r} (e.g. 'train', 'dev', 'test')"
            )
        return load_musiceval(path, split)
    if os.path.isfile(path):
        return load_manifest(path, split)
    raise MissingDataError(f"data {path!r} is neither a MusicEval folder nor a manifest file")
