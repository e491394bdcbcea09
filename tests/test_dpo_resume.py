"""``deramos dpo`` resumes mid-run: after a real SIGKILL, the same command ends with the adapter (and the
log rows) of an uninterrupted run, through epochs, gradient accumulation and the shuffled data order."""

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

from deramos_reward.cli import main
from deramos_reward.integrations.training.dpo.pairs import build_pairs, save_pairs


def _argv(tmp_path, out):
    pairs = tmp_path / "pairs"
    if not pairs.exists():
        g = torch.Generator().manual_seed(0)
        codes = torch.randint(0, 128, (6, 2, 4, 5), generator=g)
        prompts = [f"prompt {i}" for i in range(6)]
        save_pairs(build_pairs(prompts, codes, torch.tensor([[1.0, 0.0]] * 6)), pairs)
    argv = [
        "dpo",
        "--backend",
        "transformers",
        "--musicgen",
        "tiny",
        "--pairs",
        str(pairs),
        "--out",
        str(out),
    ]
    # 6 pairs in batches of 2 with 2 accumulation steps: 3 batches per epoch, an update every 2 batches or at
    # the end of an epoch, so updates and checkpoints fall in the middle of epochs too
    argv += ["--max-steps", "24", "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-2"]
    return argv + ["--save-steps", "1", "--logging-steps", "1", "--seed", "3"]


def test_dpo_resumes_after_sigkill_to_the_uninterrupted_adapter(tmp_path, capsys):
    reference = tmp_path / "reference"
    assert main(_argv(tmp_path, reference)) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 24

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "deramos_reward.cli", *_argv(tmp_path, out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while (latest_step(out) or 0) < 5:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = latest_step(out)
    assert 5 <= killed_at < 24
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    got = load_file(str(out / "adapter_model.safetensors"))
    expected = load_file(str(reference / "adapter_model.safetensors"))
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (reference / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 25)) and rows == ref_rows
    # the run folder keeps its resume state next to the adapter: the same command again has nothing to do
    assert latest_step(out) == 24 and (out / "settings.json").is_file()
    assert main(_argv(tmp_path, out)) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 24
    assert load_file(str(out / "adapter_model.safetensors")).keys() == got.keys()
    changed = _argv(tmp_path, out)
    changed[changed.index("--lr") + 1] = "1e-3"
    assert main(changed) == 2
    assert "learning_rate: 0.01 -> 0.001" in capsys.readouterr().err
