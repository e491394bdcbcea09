"""best_of_n and progressive best-of-N with synthetic generators (MusicGen ones: test_integrations_musicgen)."""

from __future__ import annotations

import math

import pytest
import torch

import deramos_reward as dr
from deramos_reward.progressive import progressive_best_of_n, stage_frames

RATE = 16_000
HOP = 320  # samples per code frame of the synthetic segment generator (50 frames/s)


@pytest.fixture(scope="module")
def reward():
    torch.manual_seed(4)
    return dr.MusicReward(dr.DeRAMOS(dr.DeRAMOSConfig.tiny()), chunk_size=4)


class ToneGenerator:
    """generate(prompts) -> [B, 2, T] noisy tones drawn from torch's global RNG; records its calls."""

    def __init__(self, seconds: float = 0.5, codes: bool = False):
        self.samples = int(seconds * RATE)
        self.codes = codes
        self.calls: list[list[str]] = []

    def __call__(self, prompts: list[str]):
        self.calls.append(list(prompts))
        b = len(prompts)
        t = torch.arange(self.samples) / RATE
        freq = 100 + 900 * torch.rand(b, 1)
        amp = torch.rand(b, 1)
        mono = amp * torch.sin(2 * math.pi * freq * t) + 0.01 * torch.randn(b, self.samples)
        audio = torch.stack([mono, 0.5 * mono], dim=1)
        if self.codes:
            return audio, torch.randint(0, 100, (b, 4, 25))
        return audio


def mean_reward(audio, sample_rate, prompts):
    """A reward with a known argmax: the mean sample value of each clip."""
    return audio.reshape(audio.shape[0], -1).mean(-1)


def test_best_of_n_picks_argmax_and_rescoring_is_bit_identical():
    torch.manual_seed(0)
    # chunk_size=1: every clip is scored alone, so scores do not depend on batch composition
    exact = dr.MusicReward(dr.DeRAMOS(dr.DeRAMOSConfig.tiny()), chunk_size=1)
    gen = ToneGenerator()
    prompts = ["a calm piano piece", "fast drums"]
    res = dr.best_of_n(gen, prompts, 3, exact, RATE, max_batch=4, seed=1, return_candidates=True)
    assert res.scores.shape == (2, 3) and res.index.shape == (2,)
    assert res.audio.shape == (2, 2, gen.samples) and res.candidates.shape == (2, 3, 2, gen.samples)
    assert torch.equal(res.index, res.scores.argmax(dim=1))
    assert res.scores.std() > 0  # the candidates differ
    for p, prompt in enumerate(prompts):
        chosen = res.candidates[p, res.index[p]]
        assert torch.equal(res.audio[p], chosen)
        with torch.no_grad():
            again = exact(res.audio[p : p + 1], RATE, [prompt])
        assert torch.equal(again[0], res.scores[p, res.index[p]])
    # the score is the mean of MI and TA per candidate (default weights 0.5, 0.5)
    torch.testing.assert_close(0.5 * res.mi + 0.5 * res.ta, res.scores)


def test_best_of_n_scores_equal_the_reward_of_every_candidate(reward):
    gen = ToneGenerator()
    prompts = ["a", "b", "c"]
    res = dr.best_of_n(gen, prompts, 2, reward, RATE, max_batch=5, seed=3, return_candidates=True)
    flat = res.candidates.reshape(6, 2, -1)
    with torch.no_grad():
        again = reward(flat, RATE, [p for p in prompts for _ in range(2)])
    assert torch.equal(again.reshape(3, 2), res.scores)


def test_candidates_are_prompt_major_and_sub_batched():
    gen = ToneGenerator()
    dr.best_of_n(gen, ["x", "y", "z"], 3, mean_reward, RATE, max_batch=4)
    assert [len(c) for c in gen.calls] == [4, 4, 1]
    assert sum(gen.calls, []) == ["x"] * 3 + ["y"] * 3 + ["z"] * 3


def test_known_argmax_and_codes_follow_the_choice():
    gen = ToneGenerator(codes=True)
    res = dr.best_of_n(gen, ["x", "y"], 4, mean_reward, RATE, max_batch=3, seed=0, return_candidates=True)
    expected = res.candidates.reshape(2, 4, -1).mean(-1)
    torch.testing.assert_close(res.scores, expected)
    assert torch.equal(res.index, expected.argmax(1))
    assert res.codes.shape == (2, 4, 25)
    for p in range(2):
        assert torch.equal(res.codes[p], res.candidate_codes[p, res.index[p]])
    assert res.mi is None  # a plain callable reward has no MI/TA


def test_seed_reproduces_candidates_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = dr.best_of_n(
        ToneGenerator(), ["x"], 3, mean_reward, RATE, max_batch=2, seed=7, return_candidates=True
    )
    assert torch.equal(torch.get_rng_state(), state)
    b = dr.best_of_n(
        ToneGenerator(), ["x"], 3, mean_reward, RATE, max_batch=2, seed=7, return_candidates=True
    )
    c = dr.best_of_n(
        ToneGenerator(), ["x"], 3, mean_reward, RATE, max_batch=2, seed=8, return_candidates=True
    )
    assert torch.equal(a.candidates, b.candidates)
    assert not torch.equal(a.candidates, c.candidates)
    # sub-batches get different seeds: the two candidates of the first call differ from the third
    assert not torch.equal(a.candidates[0, 0], a.candidates[0, 2])


def test_rows_for_json():
    res = dr.best_of_n(ToneGenerator(), ["x", "y"], 2, mean_reward, RATE, seed=0)
    rows = res.rows()
    assert len(rows) == 4
    index = res.index.tolist()
    assert [r["chosen"] for r in rows] == [index[0] == 0, index[0] == 1, index[1] == 0, index[1] == 1]
    assert rows[3]["score"] == pytest.approx(float(res.scores[1, 1]))
    assert {"prompt", "candidate", "prompt_index"} <= set(rows[0])


def test_best_of_n_bad_inputs():
    gen = ToneGenerator()
    with pytest.raises(ValueError, match="n must"):
        dr.best_of_n(gen, ["x"], 0, mean_reward, RATE)
    with pytest.raises(ValueError, match="prompts"):
        dr.best_of_n(gen, [], 2, mean_reward, RATE)
    with pytest.raises(ValueError, match="max_batch"):
        dr.best_of_n(gen, ["x"], 2, mean_reward, RATE, max_batch=0)
    with pytest.raises(ValueError, match=r"generate returned audio of shape"):
        dr.best_of_n(lambda p: torch.zeros(len(p) + 1, 100), ["x"], 2, mean_reward, RATE)
    with pytest.raises(TypeError, match="floating audio"):
        dr.best_of_n(lambda p: [0.0] * len(p), ["x"], 2, mean_reward, RATE)
    with pytest.raises(ValueError, match="reward must return"):
        dr.best_of_n(gen, ["x"], 2, lambda a, s, p: torch.zeros(3), RATE)
    with pytest.raises(ValueError, match="sample_rate"):
        dr.best_of_n(gen, ["x"], 2, mean_reward, 10)


# ---- progressive ------------------------------------------------------------------------------
class SegmentGenerator:
    """Codes [B, 1, frames] in [0, 100); audio = each frame's code / 100 held for HOP samples.

    So the partial audio's mean is the mean code so far: a reward with a known ranking.
    """

    def __init__(self):
        self.calls: list[tuple[list[str], torch.Tensor | None, int]] = []

    def __call__(self, prompts, prefix, frames):
        self.calls.append((list(prompts), None if prefix is None else prefix.clone(), frames))
        start = 0 if prefix is None else prefix.shape[-1]
        new = torch.randint(0, 100, (len(prompts), 1, frames - start))
        codes = new if prefix is None else torch.cat([prefix, new], dim=-1)
        audio = (codes[:, 0].float() / 100).repeat_interleave(HOP, dim=-1)
        return audio, codes


@pytest.mark.parametrize(
    ("n", "keep", "alive"), [(5, 0.5, [5, 3, 2]), (7, 0.3, [7, 3, 1]), (3, 1.0, [3, 3, 3])]
)
def test_progressive_returns_n_scores_and_prunes(n, keep, alive):
    gen = SegmentGenerator()
    P, total = 2, 40
    res = progressive_best_of_n(
        gen, ["x", "y"], n, mean_reward, RATE, total, checkpoints=(0.25, 0.5), keep=keep, max_batch=4, seed=0,
        return_candidates=True,
    )  # fmt: skip
    assert res.scores.shape == (P, n) and torch.isfinite(res.scores).all()
    assert res.pruned.shape == (P, n)
    assert (~res.pruned).sum(1).tolist() == [alive[-1]] * P
    # each stage generated alive * P candidates, in sub-batches of at most 4
    per_stage = {}
    for prompts, _, frames in gen.calls:
        assert len(prompts) <= 4
        per_stage[frames] = per_stage.get(frames, 0) + len(prompts)
    assert per_stage == {10: alive[0] * P, 20: alive[1] * P, 40: alive[2] * P}
    expected_frames = P * (alive[0] * 10 + alive[1] * 10 + alive[2] * 20)
    assert res.stats["generated_frames"] == expected_frames
    assert res.stats["plain_generated_frames"] == P * n * total
    assert res.stats["saved_fraction"] == pytest.approx(1 - expected_frames / (P * n * total))
    for p in range(P):
        finished = ~res.pruned[p]
        best = res.scores[p].masked_fill(~finished, -1e9).argmax()
        assert res.index[p] == best and finished[res.index[p]]
        # score of every candidate = reward of its (partial or final) audio
        for i in range(n):
            length = (40 if finished[i] else int(res.candidate_codes[p, i, 0].ne(-1).sum())) * HOP
            audio = res.candidates[p, i, :length]
            assert float(res.scores[p, i]) == pytest.approx(float(audio.mean()), abs=1e-6)
            if res.pruned[p, i]:
                assert torch.all(res.candidates[p, i, length:] == 0)
        assert torch.equal(res.codes[p], res.candidate_codes[p, res.index[p]])
        assert torch.equal(res.audio[p], res.candidates[p, res.index[p]])


def test_progressive_continues_the_kept_prefixes_and_keeps_the_best():
    gen = SegmentGenerator()
    res = progressive_best_of_n(
        gen, ["x"], 6, mean_reward, RATE, 30, checkpoints=(1 / 3,), keep=0.5, seed=1, return_candidates=True
    )
    (prompts0, prefix0, frames0), (prompts1, prefix1, frames1) = gen.calls
    assert prefix0 is None and frames0 == 10 and frames1 == 30 and len(prompts1) == 3
    first = res.candidate_codes[0, :, 0, :10]  # stage-1 codes of all 6 candidates
    stage1_score = first.float().mean(-1) / 100
    kept = torch.nonzero(~res.pruned[0]).flatten()
    assert set(kept.tolist()) == set(torch.topk(stage1_score, 3).indices.tolist())
    assert torch.equal(prefix1[:, 0], first[kept])  # the continued prefixes are the kept ones, in order


def test_stage_frames_and_bad_progressive_inputs():
    assert stage_frames(100, (0.25, 0.5)) == [25, 50, 100]
    with pytest.raises(ValueError, match="increasing"):
        stage_frames(4, (0.3, 0.35))
    with pytest.raises(ValueError, match="fractions"):
        stage_frames(100, (0.5, 1.0))
    with pytest.raises(ValueError, match="keep"):
        progressive_best_of_n(SegmentGenerator(), ["x"], 4, mean_reward, RATE, 20, keep=0.0)
    with pytest.raises(ValueError, match="codes"):
        progressive_best_of_n(
            lambda p, pre, f: (torch.zeros(len(p), 100), None), ["x"], 2, mean_reward, RATE, 20
        )


def test_progressive_with_music_reward_gives_mi_ta(reward):
    res = progressive_best_of_n(SegmentGenerator(), ["x", "y"], 3, reward, RATE, 60, keep=0.5, seed=0)
    assert res.mi.shape == (2, 3) and torch.isfinite(res.mi).all()
    torch.testing.assert_close(0.5 * res.mi + 0.5 * res.ta, res.scores)
    rows = res.rows()
    assert sum(r["pruned"] for r in rows) == int(res.pruned.sum())
