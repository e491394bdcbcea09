"""``deramos rl``: trains and saves an adapter from a DeRA-MOS checkpoint on a tiny MusicGen, resumes after a
real SIGKILL to the adapter of an uninterrupted run, and refuses changed settings with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from run_helpers import latest_step
from safetensors.torch import load_file

import deramos_reward as dr
from deramos_reward.cli import main


def _argv(tmp_path, out):
    judge = tmp_path / "judge"
    if not judge.exists():
        torch.manual_seed(0)
        dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).save_pretrained(judge)
        (tmp_path / "prompts.txt").write_text("calm piano\nfast drums\nambient pad\nrock guitar\n")
    argv = ["rl", "--backend", "transformers", "--musicgen", "tiny", "--judge", str(judge)]
    argv += [
        "--prompts",
        str(tmp_path / "prompts.txt"),
        "--out",
        str(out),
        "--max-steps",
        "6",
        "--lr",
        "1e-2",
    ]
    argv += ["--num-generations", "2", "--prompts-per-step", "2", "--duration", "0.2", "--save-steps", "2"]
    return argv + ["--logging-steps", "1", "--num-iterations", "2", "--guidance-scale", "1"]


def test_rl_cli_resumes_after_sigkill_to_the_uninterrupted_adapter(tmp_path, capsys):
    reference = tmp_path / "reference"
    assert main(_argv(tmp_path, reference)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["global_step"] == 6 and "rewards/mi/mean" in summary

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "deramos_reward.cli", *_argv(tmp_path, out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while latest_step(out) is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = latest_step(out)
    assert 2 <= killed_at < 6 and not (out / "adapter").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    got = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    expected = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert any(expected[k].abs().sum() > 0 for k in expected if "lora_B" in k)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (reference / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == [2, 4, 6]  # 2 updates per batch
    for a, b in zip(rows, ref_rows):
        assert a["reward"] == b["reward"] and a["loss"] == b["loss"]

    # the same RUN with another setting: one line, exit 2
    changed = _argv(tmp_path, out)
    changed[changed.index("--lr") + 1] = "1e-3"
    assert main(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learning_rate: 0.01 -> 0.001" in err[0]
