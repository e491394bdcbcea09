"""Evaluate a DeRA-MOS model on a rated split: predictions, metrics, ``answer.txt``, scatter plots.

```python
from deramos_reward.evaluation import predict, evaluate_split, write_answer
examples = load_dataset_split("MusicEval", "test")
mi, ta = predict(model, examples)
report = evaluate_split(mi, ta, examples)      # metrics + bootstrap CI of system SRCC
write_answer("answer.txt", [e.wav_id for e in examples], mi, ta)
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ._optional import require
from .checkpoint import atomic_write_bytes
from .data import Example, RatedClips
from .errors import InputError
from .metrics import bootstrap_system_srcc, evaluate_both, format_table, undefined_reasons
from .model import DeRAMOS
from .prompt_cache import PromptCache
from .scoring import score_clips
from .validation import check_positive_int

AXES = ("MI", "TA")


def predict(
    model: DeRAMOS,
    examples: Sequence[Example],
    batch_size: int = 16,
    max_seconds: float | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every example's audio against its prompt -> (mi [N], ta [N]) float64, in order.

    Audio is read and resampled to ``model.sample_rate`` by ``RatedClips`` (optionally cropped
    to ``max_seconds``, as in training), then scored like ``dr.score`` (long clips windowed).
    """
    if not isinstance(model, DeRAMOS):
        raise TypeError(f"model must be a deramos_reward.DeRAMOS, got {type(model).__name__}")
    batch_size = check_positive_int(batch_size, "batch_size")
    clips = RatedClips(list(examples), model.sample_rate, max_seconds)
    if len(clips) == 0:
        raise ValueError("examples is empty; nothing to evaluate")
    cache = PromptCache(model.text_encoder)
    mi, ta = [], []
    chunk = max(batch_size, 64)  # read this many clips at a time to bound memory
    bar = tqdm(total=len(clips), disable=not progress, desc="predicting", unit="clip")
    for start in range(0, len(clips), chunk):
        items = [clips[i] for i in range(start, min(start + chunk, len(clips)))]
        rows = score_clips(
            model,
            [it["wave"] for it in items],
            [it["prompt"] for it in items],
            batch_size,
            prompt_cache=cache,
        )
        mi += [r["mi"] for r in rows]
        ta += [r["ta"] for r in rows]
        bar.update(len(items))
    bar.close()
    return np.asarray(mi, dtype=np.float64), np.asarray(ta, dtype=np.float64)


def predict_reference(
    model: DeRAMOS, examples: Sequence[Example], batch_size: int = 16, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Like ``predict``, but scored as the authors' evaluation loop does (``reference_scores``).

    Batches are formed over the clips sorted by file name, as the reference's dataset sorts its
    list, so a batch holds the clips it held there (its prompts' padding changes TA); the scores come
    back in ``examples``' order.
    """
    from .reference import reference_scores

    batch_size = check_positive_int(batch_size, "batch_size")
    if not examples:
        raise ValueError("examples is empty; nothing to evaluate")
    order = sorted(range(len(examples)), key=lambda i: (os.path.basename(examples[i].path), examples[i].path))
    mi, ta = np.empty(len(examples)), np.empty(len(examples))
    bar = tqdm(total=len(examples), disable=not progress, desc="predicting (reference)", unit="clip")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = reference_scores(
            model, [examples[i].path for i in idx], [examples[i].prompt for i in idx], batch_size=batch_size
        )
        mi[idx], ta[idx] = [r["mi"] for r in rows], [r["ta"] for r in rows]
        bar.update(len(idx))
    bar.close()
    return mi, ta


def evaluate_split(
    mi: Sequence[float] | np.ndarray | torch.Tensor,
    ta: Sequence[float] | np.ndarray | torch.Tensor,
    examples: Sequence[Example],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Challenge metrics of predictions mi, ta [N] against the examples' labels.

    Returns ``{"metrics": evaluate_both(...), "system_srcc_ci": {"MI": [lo, hi], "TA": [lo, hi]},
    "ci_level", "n_clips", "n_systems", "undefined"}``; the CI resamples systems
    (``bootstrap_system_srcc``). Undefined values are ``nan`` (``json_safe`` writes them as null);
    ``undefined`` says why, per axis: ``{"MI": {"system": "only 1 system", "system_srcc_ci": ...}}``.
    """
    if not all(ex.labeled for ex in examples):
        raise ValueError("every example needs MI and TA labels to compute metrics")
    systems = [ex.system for ex in examples]
    true = {"MI": [ex.mi for ex in examples], "TA": [ex.ta for ex in examples]}
    pred = {"MI": mi, "TA": ta}
    metrics = evaluate_both(pred["MI"], true["MI"], pred["TA"], true["TA"], systems)
    ci = {
        axis: list(
            bootstrap_system_srcc(pred[axis], true[axis], systems, n_boot=n_boot, seed=seed, level=level)
        )
        for axis in AXES
    }
    undefined = {axis: undefined_reasons(true[axis], systems, pred[axis]) for axis in AXES}
    for axis in AXES:
        if any(math.isnan(v) for v in ci[axis]):
            n_systems = len(set(systems))
            undefined[axis]["system_srcc_ci"] = (
                f"the bootstrap needs at least 3 systems, the split has {n_systems}"
                if n_systems < 3
                else "no bootstrap resample has a defined system SRCC"
            )
    return {
        "metrics": metrics,
        "system_srcc_ci": ci,
        "ci_level": level,
        "n_clips": len(examples),
        "n_systems": len(set(systems)),
        "undefined": undefined,
    }


def undefined_notes(undefined: dict[str, dict[str, str]]) -> list[str]:
    """One line per distinct reason in a report's ``undefined`` (each reason stated once)."""
    by_reason: dict[str, list[str]] = {}
    for axis, levels in undefined.items():
        for level, reason in levels.items():
            what = f"{axis} system SRCC CI" if level == "system_srcc_ci" else f"{axis} {level} LCC/SRCC/KTAU"
            by_reason.setdefault(reason, []).append(what)
    return [f"undefined (null in JSON): {', '.join(whats)}: {reason}" for reason, whats in by_reason.items()]


def format_report(report: dict[str, Any]) -> str:
    """The metrics table plus one line per axis with the bootstrap CI of system SRCC."""
    lines = [format_table(report["metrics"])]
    pct = int(round(100 * report["ci_level"]))
    for axis in AXES:
        lo, hi = report["system_srcc_ci"][axis]
        srcc = report["metrics"][axis]["system"]["SRCC"]
        lines.append(
            f"{axis} system SRCC {_fmt(srcc)}  {pct}% bootstrap CI over systems [{_fmt(lo)}, {_fmt(hi)}]"
        )
    lines.append(f"{report['n_clips']} clips, {report['n_systems']} systems")
    lines += undefined_notes(report.get("undefined", {}))
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.3f}"


def write_answer(
    path: str | os.PathLike,
    wav_ids: Sequence[str],
    mi: Sequence[float] | np.ndarray,
    ta: Sequence[float] | np.ndarray,
) -> Path:
    """Write the challenge submission file: one line ``wavID,MI,TA`` per clip (atomically).

    ``wav_ids`` are written as given minus a ``.wav`` extension.
    """
    mi, ta = np.asarray(mi, dtype=np.float64), np.asarray(ta, dtype=np.float64)
    if not (len(wav_ids) == mi.shape[0] == ta.shape[0]):
        raise InputError(
            f"wav_ids, mi and ta must have one entry per clip, got {len(wav_ids)}, {mi.shape[0]}, {ta.shape[0]}"
        )
    lines = []
    for wav_id, a, b in zip(wav_ids, mi, ta):
        if not isinstance(wav_id, str) or not wav_id or "," in wav_id or "\n" in wav_id:
            raise InputError(
                f"wav id {wav_id!r} cannot be written to answer.txt (empty, or holds ',' / newline)"
            )
        name = wav_id[:-4] if wav_id.lower().endswith(".wav") else wav_id
        lines.append(f"{name},{a:.6f},{b:.6f}\n")
    path = Path(path)
    atomic_write_bytes(path, "".join(lines).encode())
    return path


def scatter_plot(
    path: str | os.PathLike,
    pred: Sequence[float] | np.ndarray,
    true: Sequence[float] | np.ndarray,
    systems: Sequence[str] | None = None,
    axis: str = "MI",
    title: str | None = None,
) -> Path:
    """Predicted-vs-true scatter PNG for one axis (clips, plus system means when ``systems`` given).

    Needs matplotlib (the ``[plot]`` extra); drawn with the Agg canvas, no display needed.
    """
    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"pred and true must be 1-D of equal length, got {pred.shape} and {true.shape}")
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=10, alpha=0.5, label="clips")
    if systems is not None:
        ids = list(systems)
        uniq = list(dict.fromkeys(ids))
        codes = np.array([uniq.index(s) for s in ids])
        ax.scatter(
            [true[codes == k].mean() for k in range(len(uniq))],
            [pred[codes == k].mean() for k in range(len(uniq))],
            s=40,
            marker="D",
            color="tab:red",
            label="system means",
        )
    ax.plot([1, 5], [1, 5], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(0.9, 5.1)
    ax.set_ylim(0.9, 5.1)
    ax.set_xlabel(f"true {axis}")
    ax.set_ylabel(f"predicted {axis}")
    ax.set_title(title or f"{axis}: predicted vs true")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
