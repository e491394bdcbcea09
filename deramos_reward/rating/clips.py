"""The clips a rating session plays, and the items a rater answers.

A clips manifest is JSONL, one clip per line (the keys of a training manifest plus a few)::

    {"path": "gen_a/clip1.wav", "prompt": "a calm piano piece", "system": "gen_a"}
    {"path": "cand/p0_c1.wav", "prompt": "fast techno", "codes": "cand/p0_c1.npy"}

Keys: ``path``, ``prompt`` (required); ``system`` (default: the audio file's folder name),
``id`` (default: ``path`` without its extension), ``split``; ``codes`` (A/B mode, for DPO: a
``.npy`` file of integer codes ``[K, S]`` relative to the manifest, or the nested list itself);
``judge_mi``, ``judge_ta`` (the judge's scores, shown with ``--show-judge``); ``mi``, ``ta``
(labels of a training manifest: accepted and ignored, never shown). Unknown keys are an error.

Only the files the manifest lists are ever served, and only when their real path (symlinks
followed) lies inside the audio root (default: the manifest's folder).

Items: in MOS mode one item per clip; in A/B mode one item per pair of clips with the same
prompt (all pairs, or ``max_pairs_per_prompt`` of them drawn with a fixed seed, the same for
every rater so that raters overlap). Each rater answers the items in their own random order.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
import re
from dataclasses import dataclass

from ..data.manifest import json_record
from ..errors import InputError, InputTypeError

CLIP_KEYS = ("path", "prompt", "system", "id", "split", "codes", "judge_mi", "judge_ta", "mi", "ta")
AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
    ".webm": "audio/webm",
}
MODES = ("mos", "ab")
RATER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Clip:
    """One manifest line. ``file`` is the real path served; ``judge`` is (mi, ta) or None."""

    index: int
    id: str
    file: str
    prompt: str
    system: str
    split: str | None
    codes: str | list | None
    judge: tuple[float, float] | None
    line: int


@dataclass(frozen=True)
class Item:
    """What a rater answers: one clip (MOS) or two clips of one prompt (A/B), by clip index."""

    id: str
    clips: tuple[int, ...]
    prompt: str


def check_rater(rater: object) -> str:
    """A rater id: 1-64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit."""
    if not isinstance(rater, str) or not RATER_PATTERN.fullmatch(rater):
        raise InputError(
            f"rater id must be 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
            f"got {rater!r}"
        )
    return rater


def inside(path: str, root: str) -> bool:
    """Is the real path of ``path`` inside the folder ``root`` (itself a real path)?"""
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) == root


def _text(record: dict, key: str, where: str, required: bool) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise InputError(f"{where}: missing required key {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _judge(record: dict, where: str) -> tuple[float, float] | None:
    values = [record.get("judge_mi"), record.get("judge_ta")]
    if values == [None, None]:
        return None
    for key, value in zip(("judge_mi", "judge_ta"), values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(
                f"{where}: {key!r} must be a finite number (give judge_mi and judge_ta together)"
            )
    return float(values[0]), float(values[1])


def _codes(record: dict, where: str) -> str | list | None:
    codes = record.get("codes")
    if codes is None or isinstance(codes, list) or (isinstance(codes, str) and codes.strip()):
        return codes
    raise InputError(f"{where}: 'codes' must be a .npy path or a [K, S] list of ints, got {codes!r}")


def _parse_line(raw: str, where: str, folder: str, root: str, index: int, line_no: int) -> Clip:
    record = json_record(raw, where, CLIP_KEYS)
    rel = _text(record, "path", where, required=True)
    prompt = _text(record, "prompt", where, required=True)
    audio = os.path.normpath(os.path.join(folder, os.path.expanduser(rel)))
    if not os.path.isfile(audio):
        raise InputError(f"{where}: audio file {audio!r} does not exist")
    if os.path.splitext(audio)[1].lower() not in AUDIO_TYPES:
        raise InputError(f"{where}: {rel!r} is not an audio file the page can play ({sorted(AUDIO_TYPES)})")
    if not inside(audio, root):
        raise InputError(
            f"{where}: {rel!r} resolves to {os.path.realpath(audio)!r}, outside the audio root {root!r}; "
            "move it under the root or pass --audio-root"
        )
    system = _text(record, "system", where, required=False) or os.path.basename(os.path.dirname(audio))
    return Clip(
        index=index,
        id=_text(record, "id", where, required=False) or os.path.splitext(rel)[0],
        file=os.path.realpath(audio),
        prompt=prompt,
        system=system or "unknown",
        split=_text(record, "split", where, required=False),
        codes=_codes(record, where),
        judge=_judge(record, where),
        line=line_no,
    )


def resolve_root(manifest: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> str:
    """The real path of the folder clips must lie in: ``audio_root``, else the manifest's folder."""
    folder = os.path.dirname(os.path.abspath(os.fspath(manifest)))
    root = os.path.realpath(os.fspath(audio_root) if audio_root is not None else folder)
    if not os.path.isdir(root):
        raise InputError(f"audio root {root!r} is not a folder")
    return root


def read_clips(manifest: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> list[Clip]:
    """Parse a clips manifest (see the module doc); errors name the file and line.

    Args:
        manifest: the JSONL file; relative paths are resolved against its folder.
        audio_root: the folder every clip must lie in after following symlinks (default: the
            manifest's folder).
    """
    path = os.path.abspath(os.fspath(manifest))
    if not os.path.isfile(path):
        raise InputError(f"clips manifest {path!r} does not exist")
    folder = os.path.dirname(path)
    root = resolve_root(path, audio_root)
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        clip = _parse_line(raw, f"{path}:{line_no}", folder, root, len(clips), line_no)
        if clip.id in seen:
            raise InputError(f"{path}:{line_no}: clip id {clip.id!r} already used on line {seen[clip.id]}")
        seen[clip.id] = line_no
        clips.append(clip)
    if not clips:
        raise InputError(f"clips manifest {path!r} has no clips")
    with_split = [c for c in clips if c.split is not None]
    if with_split and len(with_split) != len(clips):
        first = next(c for c in clips if c.split is None)
        raise InputError(f"{path}:{first.line}: this line has no 'split' but others do; give all or none")
    return clips


def mos_items(clips: list[Clip]) -> list[Item]:
    """One item per clip, in manifest order."""
    return [Item(c.id, (c.index,), c.prompt) for c in clips]


def ab_items(clips: list[Clip], max_pairs_per_prompt: int | None = None, seed: int = 0) -> list[Item]:
    """Pairs of clips with the same prompt (item id ``"<id>|<id>"`` in manifest order).

    Args:
        max_pairs_per_prompt: keep this many pairs of each prompt, drawn with ``seed`` (None: all).
    """
    if max_pairs_per_prompt is not None and (
        isinstance(max_pairs_per_prompt, bool) or not isinstance(max_pairs_per_prompt, int)
    ):
        raise InputTypeError(f"max_pairs_per_prompt must be an int or None, got {max_pairs_per_prompt!r}")
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise InputError(f"max_pairs_per_prompt must be >= 1 or None, got {max_pairs_per_prompt}")
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(clip.prompt, []).append(clip)
    items = []
    for p, (prompt, group) in enumerate(groups.items()):
        pairs = list(itertools.combinations(group, 2))
        if max_pairs_per_prompt is not None and len(pairs) > max_pairs_per_prompt:
            chosen = sorted(
                random.Random(f"{seed}:pairs:{p}").sample(range(len(pairs)), max_pairs_per_prompt)
            )
            pairs = [pairs[i] for i in chosen]
        items += [Item(f"{a.id}|{b.id}", (a.index, b.index), prompt) for a, b in pairs]
    if not items:
        raise InputError(
            "A/B mode needs at least two clips with the same prompt; every prompt of the manifest has one clip"
        )
    return items


def build_items(clips: list[Clip], mode: str, max_pairs_per_prompt: int | None = None, seed: int = 0):
    """The items of a session in ``mode`` (``"mos"`` or ``"ab"``)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    return mos_items(clips) if mode == "mos" else ab_items(clips, max_pairs_per_prompt, seed)


def rater_order(items: list[Item], rater: str, seed: int = 0) -> list[Item]:
    """This rater's own random order of the items (the same after every restart)."""
    order = list(items)
    random.Random(f"{seed}:order:{rater}").shuffle(order)
    return order


def swapped(rater: str, item_id: str, seed: int = 0) -> bool:
    """In A/B mode, does this rater hear the item's second clip as "A"? (random, fixed per rater)."""
    digest = hashlib.sha256(f"{seed}:side:{rater}:{item_id}".encode()).digest()
    return bool(digest[0] & 1)


def dev_split(clip: Clip, dev_fraction: float) -> str:
    """The clip's split in the ratings: its manifest split, else ``"dev"`` for a fixed hash-chosen
    ``dev_fraction`` of clip ids and ``"train"`` for the rest (every rater of a clip agrees)."""
    if clip.split is not None:
        return clip.split
    digest = hashlib.sha256(clip.id.encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction else "train"
