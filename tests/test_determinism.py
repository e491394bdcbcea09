"""Determinism on CPU: the same inputs give the same scores across runs, batch sizes, thread
counts and processes (within 1e-5; the measured differences are printed with ``-s``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tone

import deramos_reward as dr
from deramos_reward.reward import MusicReward

TOL = 1e-5
PROMPTS = ["calm piano", "fast drums", "calm piano", "电子 synth 🎛", "fast drums", "a"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Mixed lengths, rates and channels as files (each carries its rate); one clip is longer
    than the 30 s window, so it is scored in windows."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("determinism")
    clips = [
        (tone(0.4, 16_000, 220, seed=1), 16_000),
        (tone(2.5, 44_100, 330, channels=2, seed=2).T, 44_100),
        (tone(0.4, 16_000, 440, seed=3), 16_000),
        (tone(31.0, 8_000, 150, seed=4), 8_000),
        (tone(1.2, 48_000, 660, channels=3, seed=5).T, 48_000),
        (np.zeros(700, np.float32), 24_000),
    ]
    paths = []
    for i, (audio, rate) in enumerate(clips):
        paths.append(str(root / f"{i}.flac"))
        sf.write(paths[-1], audio, rate)
    return paths


def _score(model, files, batch_size) -> np.ndarray:
    """[clips, 2] (MI, TA) of ``files`` against PROMPTS, in one ``dr.score`` call."""
    rows = dr.score(model, files, PROMPTS, batch_size=batch_size)
    return np.array([[r["mi"], r["ta"]] for r in rows])


@pytest.fixture(scope="module")
def reference(tiny_model, files):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _score(tiny_model, files, 1)
    finally:
        torch.set_num_threads(threads)


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def test_repeated_runs_are_bit_identical(tiny_model, files, reference):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = _score(tiny_model, files, 1)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(again, reference)
    assert np.isfinite(reference).all() and ((reference >= 1) & (reference <= 5)).all()


@pytest.mark.parametrize("batch_size", [2, 3, 16])
def test_batch_size_does_not_change_scores(tiny_model, files, reference, batch_size):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = _score(tiny_model, files, batch_size)
    finally:
        torch.set_num_threads(threads)
    print(f"\nbatch_size {batch_size} vs 1: max |diff| = {_max_diff(got, reference):.2e}")
    np.testing.assert_allclose(got, reference, atol=TOL, rtol=0)


@pytest.mark.parametrize("threads", [2])
def test_thread_count_does_not_change_scores(tiny_model, files, reference, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _score(tiny_model, files, 16)
    finally:
        torch.set_num_threads(before)
    print(f"\n{threads} threads, batch 16 vs 1 thread, batch 1: max |diff| = {_max_diff(got, reference):.2e}")
    np.testing.assert_allclose(got, reference, atol=TOL, rtol=0)


def test_a_fresh_process_gives_the_same_scores(tiny_checkpoint, files, reference):
    """Another process (2 threads, loading the saved checkpoint) reproduces the scores."""
    script = f"""
import json, sys, numpy as np, torch
sys.path.insert(0, {os.path.dirname(__file__)!r})
torch.set_num_threads(2)
import deramos_reward as dr
from test_determinism import _score
model = dr.DeRAMOS.from_pretrained({str(tiny_checkpoint)!r})
print(json.dumps(_score(model, {files!r}, 4).tolist()))
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\nfresh process (2 threads, batch 4) vs reference: max |diff| = {_max_diff(got, reference):.2e}")
    np.testing.assert_allclose(got, reference, atol=TOL, rtol=0)


def test_reward_chunking_and_scorer_agree(tiny_model):
    """MusicReward gives the same MI/TA whatever its chunk size, and the same as dr.score."""
    audio = torch.stack(
        [torch.tensor(tone(1.0 + 0.25 * i, 24_000, 200 + 90 * i, seed=i))[:24_000] for i in range(5)]
    )
    prompts = PROMPTS[:5]
    torch.manual_seed(0)
    scorer = dr.DeRAMOS(dr.DeRAMOSConfig.tiny())  # its own copy: MusicReward freezes in place
    scorer.load_state_dict(tiny_model.state_dict())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outs = [MusicReward(scorer, chunk_size=c).evaluate(audio, 24_000, prompts) for c in (1, 2, 8)]
        rows = dr.score(tiny_model, audio, prompts, 24_000, batch_size=5)
    finally:
        torch.set_num_threads(threads)
    ref = torch.tensor([[r["mi"], r["ta"]] for r in rows])
    for out in outs:
        got = torch.stack([out.mi, out.ta], -1).detach()
        torch.testing.assert_close(got, ref, atol=TOL, rtol=0)


def test_seeded_construction_is_reproducible(tiny_model):
    torch.manual_seed(0)
    again = dr.DeRAMOS(dr.DeRAMOSConfig.tiny())
    a, b = tiny_model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
