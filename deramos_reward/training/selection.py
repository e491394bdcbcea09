"""Which validation quantity each checkpoint (and early stopping) follows.

The reference recipe keeps three checkpoints: ``best_loss`` (lowest validation loss),
``best_mi_sys_srcc`` (highest system-level MI SRCC) and ``best_combined`` (highest
(utterance-level MI SRCC + system-level TA SRCC) / 2).

A correlation is undefined when the validation split cannot rank anything at that level: one
system, every clip (or every system mean) rated the same, fewer than two clips. Which ones are
undefined follows from the validation labels alone, so the fallbacks are decided once per run:

- a system-level SRCC that is undefined is replaced by the same axis's utterance-level SRCC;
- a part still undefined is left out of ``combined``'s mean;
- a checkpoint with nothing left follows the validation loss (always defined).

Undefined metrics stay in the log as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..metrics import undefined_reasons

# checkpoint -> the recipe's (axis, level) SRCCs, averaged; () = the validation loss
RECIPE: dict[str, tuple[tuple[str, str], ...]] = {
    "best_loss": (),
    "best_mi_sys_srcc": (("MI", "system"),),
    "best_combined": (("MI", "utterance"), ("TA", "system")),
}
# TrainConfig.early_stopping -> the checkpoint whose quantity it watches
EARLY_STOPPING = {"loss": "best_loss", "mi_sys_srcc": "best_mi_sys_srcc", "combined": "best_combined"}


def _finite(value: Any) -> float:
    """A number, with None (an undefined value read back from JSON) as nan."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Selection:
    """What one checkpoint follows. parts: (axis, level) SRCCs averaged, () = validation loss.

    note: why this differs from the recipe (None when it does not).
    """

    parts: tuple[tuple[str, str], ...]
    note: str | None = None

    @property
    def higher(self) -> bool:
        """True when a higher value is better (correlations); False for the loss."""
        return bool(self.parts)

    @property
    def label(self) -> str:
        if not self.parts:
            return "validation loss"
        names = [f"{axis} {level} SRCC" for axis, level in self.parts]
        return names[0] if len(names) == 1 else f"({' + '.join(names)}) / {len(names)}"

    def value(self, row: dict[str, Any]) -> float:
        """This quantity in a validation row (``nan`` when undefined this epoch)."""
        if not self.parts:
            return _finite(row["val_loss"])
        values = [_finite(row["metrics"][axis][level]["SRCC"]) for axis, level in self.parts]
        return sum(values) / len(values)


def plan_selection(
    mi: Sequence[float], ta: Sequence[float], systems: Sequence[str]
) -> tuple[dict[str, Selection], dict[str, dict[str, str]]]:
    """Selections for the validation labels mi, ta [N] and their systems, and the undefined levels.

    Returns:
        ``({checkpoint: Selection}, {"MI": {level: reason}, "TA": {...}})``.
    """
    undefined = {"MI": undefined_reasons(mi, systems), "TA": undefined_reasons(ta, systems)}

    def resolve(axis: str, level: str) -> tuple[str, str] | None:
        if level not in undefined[axis]:
            return axis, level
        if level == "system" and "utterance" not in undefined[axis]:
            return axis, "utterance"
        return None

    plan = {}
    for name, parts in RECIPE.items():
        resolved = tuple(r for r in (resolve(*p) for p in parts) if r is not None)
        why = [f"{axis} {level} SRCC" for axis, level in parts if level in undefined[axis]]
        plan[name] = Selection(resolved, f"{' and '.join(why)} undefined" if why else None)
    return plan, undefined


def describe_plan(plan: dict[str, Selection], undefined: dict[str, dict[str, str]]) -> list[str]:
    """Lines stating, once, which metrics are undefined and what the checkpoints follow instead."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for axis, levels in undefined.items():
        for level, reason in levels.items():
            by_reason.setdefault((level, reason), []).append(axis)
    lines = [
        f"validation {' and '.join(axes)} {level}-level LCC/SRCC/KTAU are undefined ({reason}); logged as null"
        for (level, reason), axes in by_reason.items()
    ]
    lines += [f"{name} follows {sel.label} ({sel.note})" for name, sel in plan.items() if sel.note]
    return lines
