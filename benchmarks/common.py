"""Shared helpers for the benchmark scripts: machine description, timing, peak memory.

Peak memory is measured as resident set size (RSS), the memory the operating system actually
gives the process, because torch's CPU allocator is invisible to ``tracemalloc``:

- ``PeakRSS`` samples ``/proc/self/statm`` every millisecond from a background thread while a
  block runs and reports the highest RSS seen minus the RSS just before the block. Before each
  block, ``malloc_trim(0)`` hands freed heap pages back to the OS so that memory kept by glibc from
  an earlier block does not hide this block's peak.
- ``process_peak_rss_mb`` is ``getrusage(RUSAGE_SELF).ru_maxrss``: the whole process's peak
  (model weights included), exact but not per block.

Both are Linux-only, like the machines these benchmarks run on.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - non-glibc systems
    _LIBC = None


def rss_bytes() -> int:
    """Current resident set size of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so RSS reflects live memory."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class PeakRSS:
    """Context manager: ``peak_mb`` = highest RSS during the block minus RSS at its start (MiB)."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.peak_mb = 0.0

    def __enter__(self) -> PeakRSS:
        trim_heap()
        self._base = rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._peak = max(self._peak, rss_bytes())
        self._stop.set()
        self._thread.join()
        self.peak_mb = (self._peak - self._base) / 2**20


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS.

    Same as starting Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``: every
    allocation comes from the heap and the heap is not trimmed, so a tensor allocated after a
    freed one of the same size reuses its pages instead of page-faulting fresh ones. On the
    benchmark machine (a VM) first-touch page faults dominate element-wise ops on large tensors.
    Returns False where glibc is not available.
    """
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_MAX, 0)) and bool(_LIBC.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def process_peak_rss_mb() -> float:
    """Peak RSS of this process so far (``ru_maxrss``, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Run ``fn`` once -> (wall-clock seconds, CPU seconds of this process, result).

    CPU time (user + system, all threads) is the steadier figure on a shared machine: it does not
    count the time other processes held the cores. With one intra-op thread it equals wall time
    on an idle machine.
    """
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - start, time.process_time() - cpu, result


def peak_memory(fn: Callable[[], Any]) -> float:
    """Run ``fn`` once -> peak RSS increase in MiB (a separate, untimed call: trimming the heap
    first makes the call page-fault its memory in again, which must not count as its time)."""
    with PeakRSS() as mem:
        fn()
    return mem.peak_mb


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine() -> dict[str, str]:
    """CPU model (``lscpu``), core count, torch version and threads, load average."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_flags = next((ln for ln in f if ln.startswith("flags")), "").split()
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "cpu_flags": flags,
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
    }


def command_line() -> str:
    """The command that reproduces this run, as typed from the repository root."""
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


def header(title: str, allocator: str = "glibc default") -> str:
    """Markdown lines naming the machine, the command, the allocator and the load at the start."""
    m = machine()
    return "\n".join(
        [
            f"### {title}",
            "",
            f"- machine: {m['cpu']}, {m['cores']} cores ({m['cpu_flags']}), GPU: {m['gpu']}",
            f"- torch {m['torch']}, {m['threads']} intra-op thread(s), Python {m['python']}",
            f"- command: `{command_line()}`",
            f"- allocator: {allocator}",
            f"- load average (1/5/15 min) at start: {load_average()}",
        ]
    )


def markdown_table(columns: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
