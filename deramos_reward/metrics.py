"""The AudioMOS / MusicEval evaluation protocol.

For one axis (MI or TA): MSE, LCC (Pearson), SRCC (Spearman) and KTAU (Kendall tau-b), at the
utterance level and at the system level (mean prediction per system against mean label per
system). The challenge ranks by system-level SRCC; ``bootstrap_system_srcc`` gives a
confidence interval for it by resampling systems.

Correlations of constant or too-short inputs are undefined and come back as ``nan``;
``undefined_reasons`` says why, and ``json_safe`` turns them into ``null`` for JSON files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

METRICS = ("MSE", "LCC", "SRCC", "KTAU")


def _as_1d(values: object, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}: {err}") from err
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf at index {int(np.flatnonzero(~np.isfinite(arr))[0])}")
    return arr


def _pair(pred: object, true: object) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_1d(pred, "pred"), _as_1d(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.size} values but true has {t.size}; expected one prediction per label")
    return p, t


def _correlation(fn, p: np.ndarray, t: np.ndarray) -> float:
    """A scipy correlation, or nan when it is undefined (fewer than 2 points, constant input)."""
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(p, t)[0])


def utterance_metrics(pred: object, true: object) -> dict[str, float]:
    """MSE, LCC, SRCC and KTAU (tau-b) between ``pred`` [N] and ``true`` [N]."""
    p, t = _pair(pred, true)
    return {
        "MSE": float(np.mean((p - t) ** 2)),
        "LCC": _correlation(stats.pearsonr, p, t),
        "SRCC": _correlation(stats.spearmanr, p, t),
        "KTAU": _correlation(stats.kendalltau, p, t),
    }


def _system_ids(system_ids: object, n: int) -> list[str]:
    if isinstance(system_ids, (str, bytes)) or not hasattr(system_ids, "__iter__"):
        raise TypeError(
            f"system_ids must be a sequence with one id per clip, got {type(system_ids).__name__}"
        )
    ids = [str(s) for s in system_ids]
    if len(ids) != n:
        raise ValueError(f"system_ids has {len(ids)} entries but there are {n} predictions")
    return ids


def system_means(
    pred: object, true: object, system_ids: Sequence
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Average predictions and labels per system.

    Args:
        pred, true: [N]. system_ids: N ids (any hashable; compared as strings).

    Returns:
        ``(systems, pred_mean [S], true_mean [S])`` with systems in order of first appearance.
    """
    p, t = _pair(pred, true)
    ids = _system_ids(system_ids, p.size)
    systems = list(dict.fromkeys(ids))
    index = {s: i for i, s in enumerate(systems)}
    codes = np.array([index[s] for s in ids])
    counts = np.bincount(codes, minlength=len(systems))
    return (
        systems,
        np.bincount(codes, weights=p, minlength=len(systems)) / counts,
        np.bincount(codes, weights=t, minlength=len(systems)) / counts,
    )


def system_metrics(pred: object, true: object, system_ids: Sequence) -> dict[str, float]:
    """The four metrics on per-system means (see ``system_means``)."""
    _, p, t = system_means(pred, true, system_ids)
    return utterance_metrics(p, t)


def evaluate(pred: object, true: object, system_ids: Sequence) -> dict[str, dict[str, float]]:
    """One axis: ``{"utterance": {MSE, LCC, SRCC, KTAU}, "system": {...}}``."""
    return {"utterance": utterance_metrics(pred, true), "system": system_metrics(pred, true, system_ids)}


def evaluate_both(
    pred_mi: object, true_mi: object, pred_ta: object, true_ta: object, system_ids: Sequence
) -> dict[str, dict[str, dict[str, float]]]:
    """Both axes: ``{"MI": evaluate(...), "TA": evaluate(...)}``."""
    return {"MI": evaluate(pred_mi, true_mi, system_ids), "TA": evaluate(pred_ta, true_ta, system_ids)}


def _why_undefined(values: np.ndarray, what: str, unit: str) -> str | None:
    if values.size < 2:
        return f"only {values.size} {unit}"
    if np.ptp(values) == 0:
        return f"every {what} is {values[0]:g}"
    return None


def undefined_reasons(true: object, system_ids: Sequence, pred: object | None = None) -> dict[str, str]:
    """Why the correlations (LCC, SRCC, KTAU) of ``evaluate`` are undefined, per level.

    Args:
        true: labels [N]; system_ids: N ids; pred: predictions [N], or None to judge from the
            labels alone (what the data decides before any model is run).

    Returns:
        ``{"utterance": reason, "system": reason}`` for the undefined levels only, e.g.
        ``{"system": "only 1 system"}``; MSE is always defined.
    """
    t = _as_1d(true, "true")
    p = t if pred is None else _pair(pred, true)[0]
    systems, p_sys, t_sys = system_means(p, t, system_ids)
    levels = {
        "utterance": (t, p, "label", "prediction", "clip" if t.size == 1 else "clips"),
        "system": (
            t_sys,
            p_sys,
            "system's mean label",
            "system's mean prediction",
            "system" if len(systems) == 1 else "systems",
        ),
    }
    out = {}
    for level, (tv, pv, label, prediction, unit) in levels.items():
        reason = _why_undefined(tv, label, unit) or (
            None if pred is None else _why_undefined(pv, prediction, unit)
        )
        if reason is not None:
            out[level] = reason
    return out


def json_safe(value: object) -> object:
    """``value`` with every NaN/Inf float (an undefined metric) replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.floating):
        return json_safe(float(value))
    return value


def _row_spearman(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair of p, t [R, S] (average ranks for ties); nan if constant."""
    rp = stats.rankdata(p, axis=1)
    rt = stats.rankdata(t, axis=1)
    rp = rp - rp.mean(axis=1, keepdims=True)
    rt = rt - rt.mean(axis=1, keepdims=True)
    denom = np.sqrt((rp**2).sum(axis=1) * (rt**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rp * rt).sum(axis=1) / denom
    out[denom == 0] = np.nan
    return out


def check_bootstrap(n_boot: object, level: object) -> None:
    """Raise ValueError unless ``n_boot`` is a positive int and ``level`` lies in (0, 1)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` percentile interval of the finite bootstrap replicates ``values`` [R]
    (``(nan, nan)`` if none is finite)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_system_srcc(
    pred: object,
    true: object,
    system_ids: Sequence,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for system-level SRCC, resampling systems with replacement.

    Per-system means are computed once; each replicate draws S systems with replacement and
    takes the Spearman correlation of their means. Replicates where either side is constant
    (undefined correlation) are dropped.

    Returns:
        ``(low, high)`` at confidence ``level``; ``(nan, nan)`` with fewer than 3 systems or
        when no replicate is defined.
    """
    check_bootstrap(n_boot, level)
    _, p, t = system_means(pred, true, system_ids)
    n = p.size
    if n < 3:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    values = _row_spearman(p[draws], t[draws])
    return percentile_interval(values, level)


def bootstrap_srcc(
    pred: object, true: object, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval for utterance-level SRCC, resampling clips with replacement.

    ``pred``, ``true``: [N]. Replicates with a constant side are dropped. Returns ``(low, high)``
    at confidence ``level``; ``(nan, nan)`` with fewer than 3 clips or no defined replicate.
    """
    check_bootstrap(n_boot, level)
    p, t = _pair(pred, true)
    if p.size < 3:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, p.size, size=(n_boot, p.size))
    values = _row_spearman(p[draws], t[draws])
    return percentile_interval(values, level)


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_table(results: dict) -> str:
    """A plain-text table of ``evaluate`` or ``evaluate_both`` results.

    One row per (axis, level) with columns MSE, LCC, SRCC, KTAU; an ``evaluate`` result (one
    axis) is shown with axis ``-``.
    """
    if not isinstance(results, dict):
        raise TypeError(f"results must be a dict from evaluate/evaluate_both, got {type(results).__name__}")
    axes = {"-": results} if "utterance" in results or "system" in results else results
    header = f"{'axis':<5} {'level':<10}" + "".join(f"{m:>8}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for axis, levels in axes.items():
        if not isinstance(levels, dict):
            raise TypeError(f"results[{axis!r}] must be a dict of levels, got {type(levels).__name__}")
        for level, row in levels.items():
            missing = [m for m in METRICS if m not in row]
            if missing:
                raise ValueError(f"results[{axis!r}][{level!r}] lacks {missing}")
            lines.append(f"{axis:<5} {level:<10}" + "".join(f"{_fmt(row[m]):>8}" for m in METRICS))
    return "\n".join(lines)
