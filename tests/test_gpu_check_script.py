"""`benchmarks/gpu_check.sh` writes where it is run from (a relative --out, and the default, resolve against
the caller's folder, not the repository), and the smoke plan's simulated running-out-of-memory says it was
simulated, in the log line, the row and the results' settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_a_relative_out_lands_in_the_callers_folder(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    argv = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--sections", "environment"]
    for extra, where in ((["--out", "rel"], "rel"), (["--out=eq"], "eq"), ([], "gpu_check_out")):
        proc = subprocess.run(
            [*argv, *extra], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        meta = json.loads((tmp_path / where / "results.json").read_text())["meta"]
        assert meta["smoke"] is True and "out of memory from batch 4" in meta["simulated"]
    assert not (ROOT / "rel").exists() and not (ROOT / "eq").exists()
    assert "gpu_check_out/" in (ROOT / ".gitignore").read_text().splitlines()


def test_a_simulated_out_of_memory_is_labelled_simulated(capsys):
    rows = []
    ctx = SimpleNamespace(
        plan=SimpleNamespace(simulate_oom_batch=2),
        results=SimpleNamespace(add_row=lambda section, row: rows.append(row)),
        dev=SimpleNamespace(total_gib=lambda: None),
    )
    never = {"budget_end": time.monotonic() + 3600}
    result = gpu_check.ladder(ctx, "judge", lambda batch: None, 1.0, None, never, [2, 4])
    assert result["stopped_by"] == "out of memory" and result["largest_batch"] == 0
    assert rows == [
        {
            "batch": 2,
            "status": "out of memory",
            "peak_gib": None,
            "first_call_s": None,
            "error": "simulated out of memory at batch 2 (smoke run)",
            "simulated": True,
        }
    ]
    assert "batch 2: out of memory (simulated)" in capsys.readouterr().out
