"""Plumbing for ``gpu_check.py``: device timing and memory, time budgets, results written as they come.

- :class:`Device`: synchronised timing, peak memory (CUDA: ``max_memory_allocated``; CPU: none),
  out-of-memory detection.
- :class:`Clock`: one overall deadline plus a deadline per section.
- :class:`Results`: the JSON document and its markdown tables, both rewritten atomically (temporary
  file + ``os.replace``) after every measurement, so a run stopped part-way keeps what it measured.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", RuntimeError), torch.cuda.OutOfMemoryError}
)


class SimulatedOOM(RuntimeError):
    """Raised by the smoke run in place of a real out-of-memory error, to exercise that path."""


def is_oom(err: BaseException) -> bool:
    return isinstance(err, (*OOM_ERRORS, SimulatedOOM)) or "out of memory" in str(err).lower()


class Device:
    """Timing and memory on one device (``cuda`` or ``cpu``)."""

    def __init__(self, name: str):
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def clear(self) -> None:
        """Free cached GPU memory (after an out-of-memory error, between sections); no-op on the CPU.

        ``gc.collect`` first: an exception's traceback can keep the failed call's tensors alive.
        It costs up to a second with a large heap, so it is not called per measurement.
        """
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        """Peak memory allocated by tensors since ``reset_peak`` (GiB); None on the CPU."""
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def total_gib(self) -> float | None:
        return torch.cuda.get_device_properties(self.device).total_memory / 2**30 if self.cuda else None

    def call(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Run ``fn`` once, synchronised -> (seconds, result)."""
        self.sync()
        start = time.perf_counter()
        result = fn()
        self.sync()
        return time.perf_counter() - start, result

    def repeat(self, fn: Callable[[], Any], min_seconds: float, min_reps: int, max_reps: int) -> list[float]:
        """Time ``fn`` (already warmed up) until ``min_seconds`` in all and ``min_reps`` calls, or ``max_reps``."""
        times: list[float] = []
        while len(times) < max_reps and (len(times) < min_reps or sum(times) < min_seconds):
            times.append(self.call(fn)[0])
        return times


def median(values: list[float]) -> float:
    return statistics.median(values)


class Clock:
    """An overall deadline and per-section deadlines (seconds from ``time.monotonic``)."""

    def __init__(self, limit_s: float):
        self.start = time.monotonic()
        self.end = self.start + limit_s
        self.section_end = self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def begin_section(self, budget_s: float, reserve_s: float) -> None:
        """Section deadline: ``budget_s`` from now, leaving ``reserve_s`` for the sections after it."""
        now = time.monotonic()
        self.section_end = min(now + budget_s, self.end - reserve_s)

    def left(self) -> float:
        """Seconds left in the current section (negative once past its deadline)."""
        return min(self.section_end, self.end) - time.monotonic()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell(value: Any, fmt: str = "{:.3g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return fmt.format(value)
    return str(value)


class Results:
    """The run's JSON document (``meta``, ``sections``) and markdown tables, saved after each change.

    ``tables`` maps a section to (title, [(column title, row key, format)]); rows are dicts.
    """

    def __init__(self, out_dir: Path, meta: dict, tables: dict[str, tuple[str, list[tuple[str, str, str]]]]):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tables = tables
        self.doc: dict[str, Any] = {"schema": 1, "meta": meta, "sections": {}}

    def section(self, name: str) -> dict:
        return self.doc["sections"].setdefault(name, {"status": "not run", "seconds": 0.0, "rows": []})

    def add_row(self, name: str, row: dict) -> None:
        self.section(name)["rows"].append(row)
        self.save()

    def update(self, name: str, **fields: Any) -> None:
        self.section(name).update(fields)
        self.save()

    def save(self) -> None:
        _atomic_write(self.out_dir / "results.json", json.dumps(self.doc, indent=2, default=str) + "\n")
        _atomic_write(self.out_dir / "results.md", self.markdown())

    def markdown(self) -> str:
        meta = self.doc["meta"]
        lines = ["# deramos-reward GPU check", ""]
        lines += [f"- {key}: {meta[key]}" for key in meta if key != "flop_method"]
        lines += ["", f"FLOP counting: {meta.get('flop_method', '-')}", ""]
        lines += ["## Sections", "", "| section | status | seconds |", "|---|---|---|"]
        for name, sec in self.doc["sections"].items():
            if sec["status"] == "not run":  # tables filled by another section (judge_limits)
                continue
            lines.append(f"| {name} | {sec['status']} | {sec['seconds']:.1f} |")
        for name, (title, columns) in self.tables.items():
            rows = self.doc["sections"].get(name, {}).get("rows", [])
            lines += ["", f"## {title}", ""]
            lines.append("| " + " | ".join(c[0] for c in columns) + " |")
            lines.append("|" + "|".join("---" for _ in columns) + "|")
            for row in rows:
                lines.append("| " + " | ".join(_cell(row.get(key), fmt) for _, key, fmt in columns) + " |")
        return "\n".join(lines) + "\n"
