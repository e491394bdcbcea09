"""Turn a session's answers into what the rest of the package trains on.

- :func:`export_pairs` (A/B): one DPO pair per item whose votes favour one clip, in the schema
  of ``deramos pairs`` (``build_pairs`` columns), saved with ``save_pairs``; ``deramos dpo
  --pairs DIR`` reads it. The codes come from the clips manifest's ``codes`` key. For an item
  with clips x, y (manifest order) and ``w_x`` / ``w_y`` wins and ``t`` ties out of ``v`` votes,
  ``scores = [(w_x + t/2) / v, (w_y + t/2) / v]`` (each clip's vote share), the clip with the
  larger share is chosen, ``margin`` is the difference, and an item whose difference is not
  above ``min_margin`` gives no pair. ``prompt_index`` numbers the prompts in manifest order;
  ``chosen_index`` / ``rejected_index`` index ``scores``.
- :func:`export_mos` (MOS): one line per clip with the mean MI and TA over its raters (a
  training manifest; the ratings file itself, one line per rating, is one too).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import InputError
from ..jsonl import read_rows, write_rows
from .clips import Clip


def read_answers(path: str | os.PathLike, mode: str) -> list[dict[str, Any]]:
    """The lines of a ratings file (not modified), checked to be of ``mode``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ratings file {str(path)!r} does not exist")
    rows = read_rows(path, repair=False)
    for n, row in enumerate(rows, start=1):
        if mode == "ab":
            ok = row.get("choice") in ("a", "b", "tie") and all(
                isinstance(row.get(k), dict) and isinstance(row[k].get("id"), str) for k in ("a", "b")
            )
        else:
            ok = all(isinstance(row.get(k), (int, float)) for k in ("mi", "ta")) and isinstance(
                row.get("id"), str
            )
        if not ok or not isinstance(row.get("rater"), str):
            raise InputError(f"{path}:{n}: not a {mode.upper()} line written by deramos rate")
    if not rows:
        raise InputError(f"ratings file {str(path)!r} has no answers yet")
    return rows


def load_codes(clip: Clip, manifest: str | os.PathLike) -> np.ndarray:
    """The clip's integer codes ``[K, S]`` (a ``.npy`` path is read without pickle, relative to the manifest)."""
    where = f"{os.fspath(manifest)}:{clip.line}"
    if clip.codes is None:
        raise InputError(
            f"{where}: clip {clip.id!r} has no 'codes'; A/B pairs for DPO need every voted clip's codes"
        )
    if isinstance(clip.codes, str):
        file = os.path.join(os.path.dirname(os.path.abspath(os.fspath(manifest))), clip.codes)
        try:
            codes = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"{where}: cannot read codes {file!r} ({err})") from None
    else:
        try:
            codes = np.asarray(clip.codes)
        except ValueError as err:
            raise InputError(f"{where}: 'codes' is not a rectangular [K, S] list ({err})") from None
    if codes.ndim != 2 or codes.size == 0 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(
            f"{where}: codes must be a non-empty [K, S] integer array, got {codes.dtype} {codes.shape}"
        )
    return codes.astype(np.int64)


def vote_shares(
    rows: list[dict[str, Any]], clips: list[Clip]
) -> dict[tuple[int, int], tuple[float, float, int]]:
    """(clip index x, clip index y) in manifest order -> (share of x, share of y, votes)."""
    index = {c.id: c.index for c in clips}
    tally: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for row in rows:
        a, b = row["a"]["id"], row["b"]["id"]
        if a not in index or b not in index:
            continue  # a clip no longer in the manifest
        x, y = sorted((index[a], index[b]))
        counts = tally[(x, y)]
        if row["choice"] == "tie":
            counts[0] += 0.5
            counts[1] += 0.5
        else:
            winner = index[a] if row["choice"] == "a" else index[b]
            counts[0 if winner == x else 1] += 1.0
        counts[2] += 1
    return {k: (v[0] / v[2], v[1] / v[2], int(v[2])) for k, v in tally.items()}


def export_pairs(
    clips: list[Clip],
    manifest: str | os.PathLike,
    ratings: str | os.PathLike,
    out: str | os.PathLike,
    min_margin: float = 0.0,
):
    """Write the DPO pairs of an A/B session to ``out`` (see the module doc); returns the dataset."""
    import torch

    from ..integrations.training.dpo.pairs import build_pairs, save_pairs

    rows = read_answers(ratings, "ab")
    shares = vote_shares(rows, clips)
    if not shares:
        raise InputError(f"no vote in {os.fspath(ratings)!r} is about clips of {os.fspath(manifest)!r}")
    prompt_index = {p: i for i, p in enumerate(dict.fromkeys(c.prompt for c in clips))}
    groups: dict[tuple, list] = defaultdict(list)  # codes shape -> [(prompt, codes [2, K, S], scores [2])]
    for (x, y), (sx, sy, _) in sorted(shares.items()):
        cx, cy = load_codes(clips[x], manifest), load_codes(clips[y], manifest)
        if cx.shape != cy.shape:
            raise InputError(
                f"clips {clips[x].id!r} and {clips[y].id!r} have codes of different shapes {cx.shape}, {cy.shape}"
            )
        groups[cx.shape].append((clips[x].prompt, np.stack([cx, cy]), [sx, sy]))
    parts = []
    for entries in groups.values():
        dataset = build_pairs(
            [e[0] for e in entries],
            torch.from_numpy(np.stack([e[1] for e in entries])),
            torch.tensor([e[2] for e in entries], dtype=torch.float64),
            margin=min_margin,
            max_pairs_per_prompt=1,
            prompt_indices=[prompt_index[e[0]] for e in entries],
        )
        if len(dataset):
            parts.append(dataset)
    if not parts:
        raise InputError(f"no item has a vote-share difference above {min_margin}: no pair to export")
    dataset = parts[0] if len(parts) == 1 else require("datasets").concatenate_datasets(parts)
    settings = {
        "source": "deramos rate",
        "clips": os.path.abspath(os.fspath(manifest)),
        "ratings": os.path.abspath(os.fspath(ratings)),
        "min_margin": min_margin,
        "votes": len(rows),
    }
    save_pairs(dataset, out, settings)
    return dataset


def export_mos(ratings: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write per-clip mean MI/TA over raters as a training manifest; returns the number of clips."""
    ratings, out = Path(os.path.abspath(ratings)), Path(os.path.abspath(out))
    rows = read_answers(ratings, "mos")
    clips: dict[str, dict[str, Any]] = {}
    for row in rows:
        clip_id = row["id"].rpartition("@")[0]
        entry = clips.setdefault(clip_id, {"row": row, "mi": [], "ta": []})
        entry["mi"].append(float(row["mi"]))
        entry["ta"].append(float(row["ta"]))
    lines = []
    for clip_id, entry in clips.items():
        row = entry["row"]
        audio = os.path.normpath(os.path.join(ratings.parent, row["path"]))
        line = {
            "path": os.path.relpath(audio, out.parent),
            "prompt": row["prompt"],
            "mi": float(np.mean(entry["mi"])),
            "ta": float(np.mean(entry["ta"])),
            "system": row.get("system"),
            "split": row.get("split"),
            "id": clip_id,
        }
        lines.append({k: v for k, v in line.items() if v is not None})
    write_rows(out, lines)
    return len(lines)
