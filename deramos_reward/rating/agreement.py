"""How well the judge agrees with listeners, and listeners with each other, with bootstrap intervals.

MOS ratings (one line per clip and rater):

- judge vs listeners: the judge's MI/TA against each clip's mean rating, with the four metrics of
  :func:`deramos_reward.metrics.evaluate` at the utterance and system level; 95% percentile
  bootstrap intervals for SRCC (clips resampled; systems resampled at the system level);
- listeners: Krippendorff's alpha (interval metric) over clips rated by at least two raters,
  with a bootstrap interval (clips resampled).

A/B votes (one line per item and rater):

- judge vs listeners: pairwise accuracy, the share of non-tie votes whose winner the judge
  scores higher (an equal score counts half), for the weighted score ``mi_weight * MI +
  ta_weight * TA`` and for MI and TA alone, with a bootstrap interval (items resampled, so the
  votes on one item stay together); system level: SRCC between each system's win rate (a tie
  counts half) and the judge's mean score of its clips;
- listeners: the share of agreeing vote pairs on the same item and Krippendorff's alpha
  (nominal: first clip wins / second clip wins / tie).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import (
    bootstrap_srcc,
    bootstrap_system_srcc,
    check_bootstrap,
    evaluate,
    percentile_interval,
    system_metrics,
)

ALPHA_METRICS = ("interval", "nominal")


# ------------------------------------------------------------------------------ Krippendorff's alpha


def _alpha_terms(units: Sequence[Sequence], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pairable unit (>= 2 values): count m [U], within-unit disagreement / (m - 1) [U], and the
    sums the expected disagreement needs [U, 2] (interval: sum, sum of squares) or [U, K] (nominal counts)."""
    if metric not in ALPHA_METRICS:
        raise ValueError(f"metric must be one of {ALPHA_METRICS}, got {metric!r}")
    units = [list(u) for u in units if len(u) >= 2]
    if not units:
        return np.zeros(0), np.zeros(0), np.zeros((0, 2))
    m = np.array([len(u) for u in units], dtype=np.float64)
    if metric == "interval":
        try:
            values = [np.asarray(u, dtype=np.float64) for u in units]
        except (TypeError, ValueError) as err:
            raise TypeError(f"interval alpha needs numbers ({err})") from None
        s1 = np.array([v.sum() for v in values])
        s2 = np.array([(v**2).sum() for v in values])
        within = 2 * m * s2 - 2 * s1**2
        pooled = np.stack([s1, s2], axis=1)
    else:
        categories = {c: k for k, c in enumerate(dict.fromkeys(v for u in units for v in u))}
        pooled = np.zeros((len(units), len(categories)))
        for i, u in enumerate(units):
            for v in u:
                pooled[i, categories[v]] += 1
        within = m**2 - (pooled**2).sum(axis=1)
    return m, within / (m - 1), pooled


def _alpha_from_terms(m: np.ndarray, within: np.ndarray, pooled: np.ndarray, metric: str) -> np.ndarray:
    """alpha = 1 - (n - 1) * sum(within) / total pairwise disagreement; leading dims are batches."""
    n = m.sum(-1)
    if metric == "interval":
        s1, s2 = pooled[..., 0].sum(-1), pooled[..., 1].sum(-1)
        total = 2 * n * s2 - 2 * s1**2
    else:
        total = n**2 - (pooled.sum(-2) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = 1.0 - (n - 1) * within.sum(-1) / total
    return np.where(total > 1e-12 * np.maximum(n, 1) ** 2, alpha, np.nan)


def krippendorff_alpha(units: Sequence[Sequence], metric: str = "interval") -> float:
    """Krippendorff's alpha of ratings grouped by unit (any number of raters per unit, missing allowed).

    Args:
        units: one sequence of values per rated unit (units with fewer than two values are ignored).
        metric: ``"interval"`` (squared difference of numbers) or ``"nominal"`` (any hashable values).

    Returns:
        alpha (1 = perfect agreement, 0 = chance); nan when no unit has two values or every value is equal.
    """
    m, within, pooled = _alpha_terms(units, metric)
    if m.size == 0:
        return math.nan
    return float(_alpha_from_terms(m, within, pooled, metric))


def bootstrap_alpha(
    units: Sequence[Sequence],
    metric: str = "interval",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`krippendorff_alpha`, resampling units with replacement."""
    check_bootstrap(n_boot, level)
    m, within, pooled = _alpha_terms(units, metric)
    if m.size < 2:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, m.size, size=(n_boot, m.size))
    return percentile_interval(_alpha_from_terms(m[draws], within[draws], pooled[draws], metric), level)


def _ratio_interval(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int, level: float):
    """Bootstrap interval of sum(num) / sum(den) over units (resampled with replacement)."""
    if num.size < 2:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, num.size, size=(n_boot, num.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = num[draws].sum(1) / den[draws].sum(1)
    return percentile_interval(values, level)


# --------------------------------------------------------------------------------------- MOS


def mos_clips(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """clip id -> {"path", "prompt", "system", "mi": [...], "ta": [...], "raters": [...]} (rating lines grouped)."""
    clips: dict[str, dict[str, Any]] = {}
    for row in rows:
        clip_id = row["id"].rpartition("@")[0] or row["id"]
        entry = clips.setdefault(
            clip_id,
            {
                "path": row["path"],
                "prompt": row["prompt"],
                "system": row.get("system"),
                "mi": [],
                "ta": [],
                "raters": [],
            },
        )
        entry["mi"].append(float(row["mi"]))
        entry["ta"].append(float(row["ta"]))
        entry["raters"].append(row["rater"])
    return clips


def _with_ci(metrics: dict[str, float], ci: tuple[float, float]) -> dict[str, Any]:
    return {**metrics, "SRCC_ci": list(ci)}


def mos_report(
    rows: list[dict[str, Any]],
    judge: dict[str, tuple[float, float]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The MOS report (see the module doc). ``judge``: clip id -> (MI, TA) predicted by the judge."""
    check_bootstrap(n_boot, level)
    clips = mos_clips(rows)
    ids = list(clips)
    systems = [str(clips[i]["system"]) for i in ids]
    report: dict[str, Any] = {
        "mode": "mos",
        "ratings": len(rows),
        "clips": len(ids),
        "raters": len({r["rater"] for r in rows}),
        "systems": len(set(systems)),
        "agreement": {},
    }
    for axis in ("MI", "TA"):
        units = [clips[i][axis.lower()] for i in ids]
        report["agreement"][axis] = {
            "alpha": krippendorff_alpha(units, "interval"),
            "alpha_ci": list(bootstrap_alpha(units, "interval", n_boot, seed, level)),
            "units": sum(1 for u in units if len(u) >= 2),
        }
    if judge is not None:
        report["judge"] = {}
        for k, axis in enumerate(("MI", "TA")):
            pred = np.array([judge[i][k] for i in ids])
            true = np.array([np.mean(clips[i][axis.lower()]) for i in ids])
            result = evaluate(pred, true, systems)
            report["judge"][axis] = {
                "utterance": _with_ci(result["utterance"], bootstrap_srcc(pred, true, n_boot, seed, level)),
                "system": _with_ci(
                    result["system"], bootstrap_system_srcc(pred, true, systems, n_boot, seed, level)
                ),
            }
    return report


# --------------------------------------------------------------------------------------- A/B


def ab_votes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Votes in the item's own order: {"item", "first", "second" (clip dicts), "outcome", "rater"};
    outcome is ``"first"``, ``"second"`` or ``"tie"``."""
    votes = []
    for row in rows:
        a, b = row["a"], row["b"]
        first, second = (a, b) if row["item"] == f"{a['id']}|{b['id']}" else (b, a)
        if row["choice"] == "tie":
            outcome = "tie"
        else:
            winner = a if row["choice"] == "a" else b
            outcome = "first" if winner is first else "second"
        votes.append(
            {"item": row["item"], "first": first, "second": second, "outcome": outcome, "rater": row["rater"]}
        )
    return votes


def _judge_accuracy(votes, by_item, judge, weights, n_boot, seed, level) -> dict[str, Any]:
    items = list(by_item)
    correct, count = np.zeros(len(items)), np.zeros(len(items))
    for u, item in enumerate(items):
        for v in by_item[item]:
            if v["outcome"] == "tie":
                continue
            win, lose = (v["first"], v["second"]) if v["outcome"] == "first" else (v["second"], v["first"])
            sw = weights[0] * judge[win["id"]][0] + weights[1] * judge[win["id"]][1]
            sl = weights[0] * judge[lose["id"]][0] + weights[1] * judge[lose["id"]][1]
            correct[u] += 1.0 if sw > sl else 0.5 if sw == sl else 0.0
            count[u] += 1
    accuracy = float(correct.sum() / count.sum()) if count.sum() else math.nan
    return {
        "accuracy": accuracy,
        "accuracy_ci": list(_ratio_interval(correct, count, n_boot, seed, level)),
        "votes": int(count.sum()),
    }


def ab_report(
    rows: list[dict[str, Any]],
    judge: dict[str, tuple[float, float]] | None = None,
    mi_weight: float = 1.0,
    ta_weight: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The A/B report (see the module doc). ``judge``: clip id -> (MI, TA) predicted by the judge."""
    check_bootstrap(n_boot, level)
    votes = ab_votes(rows)
    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in votes:
        by_item[v["item"]].append(v)
    units = [[v["outcome"] for v in group] for group in by_item.values()]
    counts = [np.unique(u, return_counts=True)[1] for u in units if len(u) >= 2]
    same = np.array([float((c * (c - 1)).sum()) for c in counts])
    pairs = np.array([float(c.sum() * (c.sum() - 1)) for c in counts])
    report: dict[str, Any] = {
        "mode": "ab",
        "votes": len(votes),
        "items": len(by_item),
        "raters": len({v["rater"] for v in votes}),
        "ties": sum(1 for v in votes if v["outcome"] == "tie"),
        "agreement": {
            "percent_agreement": float(same.sum() / pairs.sum()) if pairs.size else math.nan,
            "percent_agreement_ci": list(_ratio_interval(same, pairs, n_boot, seed, level)),
            "alpha": krippendorff_alpha(units, "nominal"),
            "alpha_ci": list(bootstrap_alpha(units, "nominal", n_boot, seed, level)),
            "units": len(counts),
        },
    }
    if judge is None:
        return report
    weights = {"score": (mi_weight, ta_weight), "MI": (1.0, 0.0), "TA": (0.0, 1.0)}
    report["judge"] = {
        name: _judge_accuracy(votes, by_item, judge, w, n_boot, seed, level) for name, w in weights.items()
    }
    report["judge"]["weights"] = {"mi": mi_weight, "ta": ta_weight}
    pred, won, systems = [], [], []
    for v in votes:
        for clip, result in ((v["first"], "first"), (v["second"], "second")):
            score = judge[clip["id"]]
            pred.append(mi_weight * score[0] + ta_weight * score[1])
            won.append(0.5 if v["outcome"] == "tie" else float(v["outcome"] == result))
            systems.append(str(clip.get("system")))
    system = system_metrics(pred, won, systems)
    report["judge"]["system"] = {
        "SRCC": system["SRCC"],
        "SRCC_ci": list(bootstrap_system_srcc(pred, won, systems, n_boot, seed, level)),
        "systems": len(set(systems)),
    }
    return report


# ------------------------------------------------------------------------------------- helpers


def rated_clips(rows: list[dict[str, Any]], folder: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """clip id -> (audio path resolved against the ratings file's folder, prompt), for scoring."""
    out: dict[str, tuple[str, str]] = {}
    for row in rows:
        if "choice" in row:
            for side in (row["a"], row["b"]):
                out.setdefault(side["id"], (os.path.join(folder, side["path"]), row["prompt"]))
        else:
            clip_id = row["id"].rpartition("@")[0] or row["id"]
            out.setdefault(clip_id, (os.path.join(folder, row["path"]), row["prompt"]))
    return out


def _num(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _ci(pair: Sequence[float]) -> str:
    return f"[{_num(pair[0])}, {_num(pair[1])}]"


def format_report(report: dict[str, Any]) -> str:
    """A plain-text summary of :func:`mos_report` or :func:`ab_report`."""
    lines = []
    agreement = report["agreement"]
    if report["mode"] == "mos":
        lines.append(
            f"{report['ratings']} ratings of {report['clips']} clips by {report['raters']} raters "
            f"({report['systems']} systems)"
        )
        for axis in ("MI", "TA"):
            a = agreement[axis]
            lines.append(
                f"raters  {axis}  Krippendorff alpha {_num(a['alpha'])} {_ci(a['alpha_ci'])} ({a['units']} clips)"
            )
        for axis, levels in report.get("judge", {}).items():
            for level, m in levels.items():
                lines.append(
                    f"judge   {axis}  {level:<9} SRCC {_num(m['SRCC'])} {_ci(m['SRCC_ci'])}  "
                    f"LCC {_num(m['LCC'])}  KTAU {_num(m['KTAU'])}  MSE {_num(m['MSE'])}"
                )
        return "\n".join(lines)
    lines.append(
        f"{report['votes']} votes on {report['items']} items by {report['raters']} raters ({report['ties']} ties)"
    )
    lines.append(
        f"raters  agreement {_num(agreement['percent_agreement'])} {_ci(agreement['percent_agreement_ci'])}  "
        f"Krippendorff alpha {_num(agreement['alpha'])} {_ci(agreement['alpha_ci'])} ({agreement['units']} items)"
    )
    judge = report.get("judge")
    if judge:
        for name in ("score", "MI", "TA"):
            j = judge[name]
            lines.append(
                f"judge   pairwise accuracy ({name:<5}) {_num(j['accuracy'])} {_ci(j['accuracy_ci'])}"
            )
        s = judge["system"]
        lines.append(
            f"judge   system SRCC (win rate)   {_num(s['SRCC'])} {_ci(s['SRCC_ci'])} ({s['systems']} systems)"
        )
    return "\n".join(lines)
