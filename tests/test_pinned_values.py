"""Values pinned before the architecture refactor (backend interface, one windowing path, checks at
the edges): a fixed tiny judge's scores, fixed-seed best-of-N on both MusicGen libraries and a short
fixed-seed DPO run must keep these numbers. If one changes, the refactor changed behaviour.

The judge's default architecture moved to the authors' (attentive pooling, no positional encoding):
a judge built with the earlier architecture keeps the earlier numbers, the default has its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deramos_reward as dr
from deramos_reward.integrations.dpo import MusicDPOTrainer
from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.rerank import best_of_n
from deramos_reward.integrations.training.dpo.config import MusicDPOConfig
from deramos_reward.integrations.training.dpo.pairs import build_pairs

PROMPTS = ["soft piano ballad", "fast techno"]
# The architecture this package had before it followed the authors' code: its pinned values must not move.
LEGACY = {"attentive_pooling": "tanh", "positional_encoding": True}

# architecture -> (judge scores, transformers best-of-N (scores, picks, code sum), AudioCraft best-of-N)
PINNED = {
    "legacy": (
        [[3.0166091918945312, 2.999011278152466], [3.002734661102295, 2.9852747917175293]],
        ([[6.010157108306885, 6.010396957397461, 6.010013580322266],
          [6.010066032409668, 6.009960651397705, 6.009952545166016]], [1, 0], 7428),
        ([[6.005817413330078, 6.006648063659668, 6.005781173706055],
          [6.006463527679443, 6.006119251251221, 6.005714416503906]], [1, 0], 16123),
    ),
    # the reference's architecture (the default since): pinned when it became the default
    "reference": (
        [[2.9432566165924072, 3.0423715114593506], [2.93460750579834, 3.0342376232147217]],
        ([[5.96735143661499, 5.967507362365723, 5.966731071472168],
          [5.966509819030762, 5.9669270515441895, 5.967335224151611]], [1, 2], 7320),
        ([[5.958911895751953, 5.959857940673828, 5.959237098693848],
          [5.959700584411621, 5.959111213684082, 5.959293365478516]], [1, 0], 16123),
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(PINNED))
def judge(request):
    cfg = dr.DeRAMOSConfig.tiny()
    if request.param == "legacy":
        cfg = dr.DeRAMOSConfig.from_dict({**cfg.to_dict(), **LEGACY})
    torch.manual_seed(0)
    return request.param, dr.DeRAMOS(cfg).eval()


def test_tiny_judge_scores_are_pinned(judge):
    name, model = judge
    rng = np.random.default_rng(0)
    clips = [
        0.1 * rng.standard_normal(16000 * 2).astype(np.float32),
        0.2 * rng.standard_normal(24000 * 3).astype(np.float32),
    ]
    rows = dr.score(model, clips, ["calm piano", "loud rock drums"], sample_rate=16000)
    got = [[r["mi"], r["ta"]] for r in rows]
    np.testing.assert_allclose(got, PINNED[name][0], rtol=0, atol=1e-5)


def test_fixed_seed_best_of_n_is_pinned_on_both_libraries(judge):
    name, model = judge
    reward = dr.MusicReward(model, mi_weight=1.0, ta_weight=1.0)
    musicgen, processor = tm.tiny_musicgen(seed=0)
    res = best_of_n(musicgen, PROMPTS, 3, reward, processor=processor, seed=123, duration=0.3)
    scores, picks, code_sum = PINNED[name][1]
    np.testing.assert_allclose(res.scores.tolist(), scores, rtol=0, atol=1e-5)
    assert res.index.tolist() == picks and int(res.codes.sum()) == code_sum

    musicgen = ac.tiny_musicgen(seed=0)
    res = best_of_n(musicgen, PROMPTS, 3, reward, duration=0.4, seed=123)
    scores, picks, code_sum = PINNED[name][2]
    np.testing.assert_allclose(res.scores.tolist(), scores, rtol=0, atol=1e-5)
    assert res.index.tolist() == picks and int(res.codes.sum()) == code_sum


def test_fixed_seed_dpo_run_is_pinned():
    model, processor = tm.tiny_musicgen(seed=0)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 128, (4, 2, 4, 6), generator=g)
    pairs = build_pairs(["a b", "c d", "e f", "g h"], codes, torch.tensor([[1.0, 0.0]] * 4))
    config = MusicDPOConfig(
        learning_rate=1e-2, max_steps=3, per_device_train_batch_size=2, logging_steps=1, seed=7
    )
    trainer = MusicDPOTrainer(model, pairs, config, processor=processor)
    summary = trainer.train()
    lora = sum(p.detach().double().abs().sum() for n, p in trainer.policy.named_parameters() if "lora_" in n)
    assert summary["train_loss"] == pytest.approx(0.694040854771932, abs=1e-6)
    assert float(lora) == pytest.approx(368.92756456742063, rel=1e-6)
