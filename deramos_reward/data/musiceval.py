"""Reader for the MusicEval layout (AudioMOS 2025 Track 1).

```
root/wav/*.wav
root/sets/{split}_mos_list.txt   lines "wavname,MI,TA" (wavname with or without .wav;
                                 a list without scores has lines "wavname")
root/prompt_info.txt             tab-separated "P###<TAB>text" (an "id<TAB>text" header is skipped)
root/demo_prompt_info.txt        optional; tab-separated "<full wav name><TAB>text" for demo systems
```
Wav ids look like ``audiomos2025-track1-S002_P044``. The system id is the part before the first
``_`` after removing ``audiomos2025-track1-`` (``S002``); the prompt id is the first later
``_``-separated token of the form ``P<digits>`` (``P044``). A clip listed in
``demo_prompt_info.txt`` (by its wav name, with or without ``.wav``) takes its prompt from there;
every other clip from ``prompt_info.txt`` by prompt id.

All format problems raise ``DataFormatError`` (an ``InputError``, so a ``ValueError``) naming the file and line;
missing files raise ``MissingDataError`` (both a ``DataFormatError`` and a ``FileNotFoundError``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..validation import check_file
from .ratings import check_rating_scale, to_mos

MUSICEVAL_PREFIX = "audiomos2025-track1-"
_PROMPT_TOKEN = re.compile(r"^P\d+$")
_HEADER_KEYS = ("id", "wav_id", "wavname", "prompt_id")


class DataFormatError(InputError):
    """A data file is malformed; the message names the file and line."""


class MissingDataError(FileNotFoundError, DataFormatError):
    """A file the data refers to (or the data itself) does not exist."""


@dataclass(frozen=True)
class Example:
    """One rated (or unrated) clip.

    wav_id: clip id without extension (used in the challenge ``answer.txt``).
    path: absolute path of the audio file. prompt: its text prompt.
    mi, ta: labels on 1-5, or None when the clip is unlabeled. system: system (generator) id.
    """

    wav_id: str
    path: str
    prompt: str
    mi: float | None
    ta: float | None
    system: str

    @property
    def labeled(self) -> bool:
        return self.mi is not None and self.ta is not None


def strip_wav(name: str) -> str:
    """``"x.wav"`` -> ``"x"`` (case-insensitive); other names unchanged."""
    return name[:-4] if name.lower().endswith(".wav") else name


def system_of(wav_id: str) -> str:
    """System id: the prefix before the first ``_`` after removing ``audiomos2025-track1-``."""
    name = strip_wav(wav_id)
    if name.startswith(MUSICEVAL_PREFIX):
        name = name[len(MUSICEVAL_PREFIX) :]
    return name.split("_", 1)[0]


def prompt_id_of(wav_id: str) -> str | None:
    """Prompt id: the first ``_``-separated token after the system that looks like ``P<digits>``."""
    name = strip_wav(wav_id)
    if name.startswith(MUSICEVAL_PREFIX):
        name = name[len(MUSICEVAL_PREFIX) :]
    for token in name.split("_")[1:]:
        if _PROMPT_TOKEN.match(token):
            return token
    return None


def _require_file(path: str, what: str) -> None:
    check_file(path, what, missing=MissingDataError)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def read_prompt_table(path: str | os.PathLike) -> dict[str, str]:
    """Read a tab-separated ``key<TAB>text`` file (``prompt_info.txt`` / ``demo_prompt_info.txt``).

    Blank lines are skipped, as is a first line whose key is a column name (``id``).
    Raises DataFormatError for a line without a tab, an empty key or text, or a key given two
    different texts.
    """
    path = os.fspath(path)
    _require_file(path, "prompt table")
    table: dict[str, str] = {}
    with open(path, encoding="utf-8-sig") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataFormatError(f"{path}:{line_no}: expected 'id<TAB>text', found no tab in {line!r}")
            key, text = line.split("\t", 1)
            key, text = key.strip(), _unquote(text.strip())
            if not table and line_no == 1 and key.lower() in _HEADER_KEYS:
                continue
            if not key or not text:
                raise DataFormatError(f"{path}:{line_no}: empty id or text in {line!r}")
            if key in table and table[key] != text:
                raise DataFormatError(f"{path}:{line_no}: id {key!r} already has a different text")
            table[key] = text
    return table


def _score(field: str, what: str, where: str) -> float:
    try:
        value = float(field)
    except ValueError:
        raise DataFormatError(f"{where}: {what} score {field!r} is not a number") from None
    if not math.isfinite(value):
        raise DataFormatError(f"{where}: {what} score {field!r} is not finite")
    return value


def read_mos_list(path: str | os.PathLike) -> list[tuple[int, str, float | None, float | None]]:
    """Read a ``sets/*_mos_list.txt``: lines ``wavname,MI,TA`` or (unlabeled) ``wavname``.

    Returns:
        ``(line_no, wavname, mi, ta)`` per non-blank line; mi/ta are None on unlabeled lines.
    """
    path = os.fspath(path)
    _require_file(path, "MOS list")
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = [x.strip() for x in line.split(",")]
            where = f"{path}:{line_no}"
            if not fields[0]:
                raise DataFormatError(f"{where}: empty wav name in {line!r}")
            if len(fields) == 1:
                rows.append((line_no, fields[0], None, None))
            elif len(fields) == 3:
                rows.append(
                    (line_no, fields[0], _score(fields[1], "MI", where), _score(fields[2], "TA", where))
                )
            else:
                raise DataFormatError(
                    f"{where}: expected 'wavname,MI,TA' or 'wavname', got {len(fields)} fields in {line!r}"
                )
    return rows


def mos_list_path(root: str | os.PathLike, split: str) -> str:
    """``root/sets/{split}_mos_list.txt`` (or ``root/sets/{split}_list.txt`` if only that exists)."""
    root = os.fspath(root)
    if not isinstance(split, str) or not split or os.sep in split:
        raise InputError(f"split must be a split name such as 'train', 'dev' or 'test', got {split!r}")
    candidates = [
        os.path.join(root, "sets", f"{split}_mos_list.txt"),
        os.path.join(root, "sets", f"{split}_list.txt"),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise MissingDataError(f"split {split!r} of MusicEval root {root!r} not found; looked for {candidates}")


def load_musiceval(
    root: str | os.PathLike, split: str, rating_scale: Sequence[float] | None = None
) -> list[Example]:
    """Read one split of a MusicEval-layout corpus.

    Args:
        root: the corpus folder (holding ``wav/``, ``sets/``, ``prompt_info.txt``).
        split: e.g. ``"train"``, ``"dev"``, ``"test"``: reads ``sets/{split}_mos_list.txt``.
        rating_scale: ``(low, high)`` of the scores in the list (default 1-5, MusicEval's); they
            are mapped onto 1-5, and a score outside the scale is an error naming the line.

    Returns:
        one ``Example`` per listed clip, in list order.

    Raises:
        MissingDataError for a missing root, list, prompt table or wav file; DataFormatError for
        malformed lines, duplicate clips, a wav id without a prompt id, or an unknown prompt id.
    """
    scale = check_rating_scale(rating_scale)
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise MissingDataError(f"MusicEval root {root!r} is not a folder")
    list_path = mos_list_path(root, split)
    prompts = read_prompt_table(os.path.join(root, "prompt_info.txt"))
    demo_path = os.path.join(root, "demo_prompt_info.txt")
    demo = read_prompt_table(demo_path) if os.path.isfile(demo_path) else {}
    examples, seen = [], {}
    for line_no, name, mi, ta in read_mos_list(list_path):
        where = f"{list_path}:{line_no}"
        wav_id = strip_wav(name)
        if wav_id in seen:
            raise DataFormatError(f"{where}: clip {wav_id!r} is listed twice (first on line {seen[wav_id]})")
        seen[wav_id] = line_no
        path = os.path.join(root, "wav", wav_id + ".wav")
        if not os.path.isfile(path):
            kind = "is a folder, not an audio file" if os.path.isdir(path) else "does not exist"
            raise MissingDataError(f"{where}: audio file {path!r} for {name!r} {kind}")
        mi, ta = to_mos(mi, scale, where, "MI"), to_mos(ta, scale, where, "TA")
        prompt = demo.get(wav_id + ".wav") or demo.get(wav_id) or demo.get(name)
        if prompt is None:
            pid = prompt_id_of(wav_id)
            if pid is None:
                raise DataFormatError(
                    f"{where}: cannot find a prompt id (P<digits>) in wav name {name!r}, and it is not "
                    f"listed in {demo_path}"
                )
            if pid not in prompts:
                raise DataFormatError(
                    f"{where}: prompt id {pid!r} of {name!r} is not in {os.path.join(root, 'prompt_info.txt')}"
                )
            prompt = prompts[pid]
        examples.append(Example(wav_id, path, prompt, mi, ta, system_of(wav_id)))
    if not examples:
        raise DataFormatError(f"{list_path} lists no clips")
    return examples
