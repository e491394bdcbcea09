"""Preference pairs: selection against brute force, the datasets layout, disk round trips, real tiny
MusicGens of both libraries end to end (scores re-computed from the stored codes), and ``deramos pairs``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

import deramos_reward as dr
from deramos_reward.cli import main
from deramos_reward.integrations import rerank as mr
from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.musicgen.transformers.logprobs import generate_with_codes
from deramos_reward.integrations.rl import codes_decoder
from deramos_reward.integrations.training.dpo.pairs import (
    PAIR_COLUMNS,
    PAIRS_SETTINGS,
    build_pairs,
    collate_pairs,
    generate_pairs,
    load_pairs,
    musicgen_pairs,
    save_pairs,
    select_pairs,
)

PROMPTS = ["rock guitar with drums", "soft piano ballad", "dark ambient drone"]


def _brute_force(scores, margin, cap):
    pairs = [(i, j, scores[i] - scores[j]) for i, j in itertools.permutations(range(len(scores)), 2)]
    pairs = [p for p in pairs if p[2] > margin]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs if cap is None else pairs[:cap]


# ---------------------------------------------------------------------------------------- selection


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.0, 0.3])
@pytest.mark.parametrize("cap", [1, 3, None])
def test_select_pairs_matches_brute_force(seed, margin, cap):
    scores = np.random.default_rng(seed).normal(size=6).round(1)  # rounding makes ties
    got = select_pairs(torch.tensor(scores), margin=margin, max_pairs=cap)
    expected = _brute_force(scores.tolist(), margin, cap)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
    np.testing.assert_allclose([d for *_, d in got], [d for *_, d in expected], rtol=1e-12)


def test_select_pairs_default_is_best_versus_worst():
    scores = [0.2, 0.9, -0.5, 0.4]
    assert select_pairs(scores) == [(1, 2, pytest.approx(1.4))]
    assert select_pairs([1.0, 1.0, 1.0]) == []  # no preference, no pair
    assert select_pairs(scores, margin=1.4) == []  # strictly greater than the margin
    assert len(select_pairs(scores, max_pairs=None)) == 6  # every ordered pair of distinct scores


def test_select_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        select_pairs([0.1, float("nan")])
    with pytest.raises(ValueError, match="N >= 2"):
        select_pairs([0.1])
    with pytest.raises(ValueError, match="margin"):
        select_pairs([0.1, 0.2], margin=-1.0)
    with pytest.raises(ValueError, match="max_pairs"):
        select_pairs([0.1, 0.2], max_pairs=0)


# ------------------------------------------------------------------------------------------ dataset


def _candidates(p=3, n=4, k=4, s=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 100, (p, n, k, s), generator=g), torch.randn(p, n, generator=g)


def test_build_pairs_rows_come_from_the_right_candidates():
    codes, scores = _candidates()
    mi, ta = scores + 3.0, scores - 3.0
    ds = build_pairs(PROMPTS, codes, scores, margin=0.1, max_pairs_per_prompt=2, mi=mi, ta=ta)
    assert set(PAIR_COLUMNS) <= set(ds.column_names)
    expected = [(p, i, j) for p in range(3) for i, j, _ in select_pairs(scores[p], margin=0.1, max_pairs=2)]
    assert len(ds) == len(expected) > 3
    for row, (p, i, j) in zip(ds, expected):
        assert row["prompt"] == PROMPTS[p] and row["prompt_index"] == p
        assert (row["chosen_index"], row["rejected_index"]) == (i, j)
        assert torch.equal(torch.tensor(row["chosen_codes"]), codes[p, i])
        assert torch.equal(torch.tensor(row["rejected_codes"]), codes[p, j])
        assert row["chosen_score"] == pytest.approx(float(scores[p, i]))
        assert row["rejected_score"] == pytest.approx(float(scores[p, j]))
        assert (
            row["margin"] == pytest.approx(row["chosen_score"] - row["rejected_score"])
            and row["margin"] > 0.1
        )
        assert row["scores"] == pytest.approx(scores[p].tolist())
        assert row["chosen_mi"] == pytest.approx(float(mi[p, i]))
        assert row["rejected_ta"] == pytest.approx(float(ta[p, j]))


def test_build_pairs_validates_shapes():
    codes, scores = _candidates()
    with pytest.raises(ValueError, match=r"\[P, N, K, S\]"):
        build_pairs(PROMPTS, codes[0], scores)
    with pytest.raises(ValueError, match="same P and N"):
        build_pairs(PROMPTS, codes, scores[:, :3])
    with pytest.raises(ValueError, match="same P and N"):
        build_pairs(PROMPTS[:2], codes, scores)
    with pytest.raises(TypeError, match="integer"):
        build_pairs(PROMPTS, codes.float(), scores)
    with pytest.raises(ValueError, match="together"):
        build_pairs(PROMPTS, codes, scores, mi=scores)


def test_save_load_round_trip_and_collate(tmp_path):
    codes, scores = _candidates()
    ds = build_pairs(PROMPTS, codes, scores, max_pairs_per_prompt=None)
    path = save_pairs(ds, tmp_path / "pairs", settings={"n": 4})
    assert json.loads((path / PAIRS_SETTINGS).read_text()) == {"n": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]  # no temporary folder left behind
    back = load_pairs(path)
    assert back.to_dict() == ds.to_dict()
    prompts, chosen, rejected = collate_pairs([back[0], back[1]])
    assert prompts == [back[0]["prompt"], back[1]["prompt"]]
    assert chosen.shape == rejected.shape == (2, 4, 5) and chosen.dtype == torch.long
    assert torch.equal(chosen[1], torch.tensor(back[1]["chosen_codes"]))
    with pytest.raises(FileExistsError):
        save_pairs(ds, path)
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "missing")
    ds.remove_columns("rejected_codes").save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="rejected_codes"):
        load_pairs(tmp_path / "bad")
    with pytest.raises(ValueError, match="one shape"):
        collate_pairs([back[0], {**back[1], "chosen_codes": [[1, 2]] * 4}])


# ------------------------------------------------------------------------- real tiny MusicGens


@pytest.fixture(scope="module")
def reward():
    torch.manual_seed(0)
    return dr.MusicReward(dr.DeRAMOS(dr.DeRAMOSConfig.tiny()), mi_weight=0.5, ta_weight=0.5)


def test_audiocraft_pairs_scores_match_the_reward_of_the_stored_codes(reward):
    musicgen = ac.tiny_musicgen(seed=0)
    ds = musicgen_pairs(musicgen, PROMPTS[:2], 4, reward, duration=0.24, seed=3, max_pairs_per_prompt=2)
    assert len(ds) == 4
    chosen = torch.tensor(list(ds["chosen_codes"]))
    rejected = torch.tensor(list(ds["rejected_codes"]))
    assert chosen.shape == (4, 4, 6)  # [pairs, K, round(0.24 s * 25 Hz)]
    with torch.no_grad():
        audio = musicgen.generate_audio(torch.cat([chosen, rejected]))
        rescored = reward(audio, musicgen.sample_rate, list(ds["prompt"]) * 2)
    np.testing.assert_allclose(rescored[:4], list(ds["chosen_score"]), atol=1e-4)
    np.testing.assert_allclose(rescored[4:], list(ds["rejected_score"]), atol=1e-4)
    assert all(c > r for c, r in zip(ds["chosen_score"], ds["rejected_score"]))
    assert ds[0]["chosen_score"] == pytest.approx(max(ds[0]["scores"]))
    assert ds[0]["rejected_score"] == pytest.approx(min(ds[0]["scores"]))
    again = musicgen_pairs(musicgen, PROMPTS[:2], 4, reward, duration=0.24, seed=3, max_pairs_per_prompt=2)
    assert list(again["chosen_codes"]) == list(ds["chosen_codes"])  # seeded


def test_transformers_pairs_scores_match_the_reward_of_the_stored_codes(reward):
    model, processor = tm.tiny_musicgen(seed=0)
    # The tiny EnCodec's codebooks are all zeros (transformers fills them from checkpoints), so every code
    # would decode to the same audio; random codebook vectors make the audio depend on the codes.
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(generator=torch.Generator().manual_seed(0))
    ds = musicgen_pairs(
        model, PROMPTS, 3, reward, processor=processor, duration=0.14, seed=1, guidance_scale=1.0
    )
    assert len(ds) == 3 and list(ds["prompt"]) == PROMPTS
    chosen = torch.tensor(list(ds["chosen_codes"]))
    assert chosen.shape == (3, 4, 7)  # [pairs, K, 0.14 s * 50 Hz]
    decode, rate = codes_decoder(model)
    with torch.no_grad():
        rescored = reward(decode(chosen), rate, PROMPTS)
    np.testing.assert_allclose(rescored, list(ds["chosen_score"]), atol=1e-4)


def test_generate_pairs_with_any_generator_and_reward():
    model, processor = tm.tiny_musicgen(seed=0)

    def generate(prompts):
        _, codes = generate_with_codes(model, processor, prompts, 4 + 6 - 1, guidance_scale=1.0)
        audio = codes.float().mean(1, keepdim=True).repeat_interleave(160, dim=-1) / 128 - 0.5
        return audio, codes

    def mean_level(audio, sample_rate, prompts):  # a reward of the audio: its mean level
        return audio.mean(dim=(1, 2))

    ds = generate_pairs(generate, PROMPTS[:2], 5, mean_level, 16000, seed=0, max_pairs_per_prompt=None)
    chosen, rejected = torch.tensor(list(ds["chosen_codes"])), torch.tensor(list(ds["rejected_codes"]))
    # the reward is the mean code id, up to the affine map: chosen codes have the larger mean
    assert ((chosen.double().mean((1, 2)) - rejected.double().mean((1, 2))) > 0).all()
    assert len(ds) == sum(
        len(select_pairs(s, max_pairs=None)) for s in torch.tensor(list(ds["scores"]))[[0, -1]]
    )
    with pytest.raises(ValueError, match="n must be"):
        generate_pairs(generate, PROMPTS[:2], 1, mean_level, 16000)


# ----------------------------------------------------------------------------------------------- CLI


def _pairs_cli(tmp_path, checkpoint, out, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return main(
        [
            "pairs",
            "--backend",
            "audiocraft",
            "--musicgen",
            "tiny",
            "--reward",
            str(checkpoint),
            "--prompts",
            str(prompts),
            "--n",
            "3",
            "--duration",
            "0.2",
            "--seed",
            "7",
            "--max-batch",
            "6",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_pairs_cli_writes_a_dataset_and_resumes(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    # --max-batch 3 / --n 3: one prompt per generate call, each with its own seed derived from --seed
    args = ("--max-pairs-per-prompt", "0", "--max-batch", "3")
    out = tmp_path / "pairs"
    assert _pairs_cli(tmp_path, tiny_checkpoint, out, *args) == 0
    ds = load_pairs(out)
    assert sorted(set(ds["prompt_index"])) == [0, 1, 2] and len(ds) > 3  # all pairs of 3 candidates
    assert all(r["chosen_score"] > r["rejected_score"] for r in ds)
    assert {"chosen_mi", "chosen_ta"} <= set(ds.column_names)
    settings = json.loads((out / PAIRS_SETTINGS).read_text())
    assert settings["n"] == 3 and settings["prompts"] == PROMPTS
    assert not (tmp_path / "pairs.partial.jsonl").exists()
    assert _pairs_cli(tmp_path, tiny_checkpoint, out, *args) == 0
    assert "already complete" in capsys.readouterr().err

    # interrupted during the second prompt, then resumed: the same dataset, prompt 0 not redone
    calls = []
    real = mr.best_of_n

    def interrupted(*a, **k):
        calls.append(a[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(mr, "best_of_n", interrupted)
    again = tmp_path / "again"
    assert _pairs_cli(tmp_path, tiny_checkpoint, again, *args) == 130
    assert not again.exists() and (tmp_path / "again.partial.jsonl").is_file()
    monkeypatch.setattr(mr, "best_of_n", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    assert _pairs_cli(tmp_path, tiny_checkpoint, again, *args) == 0
    assert calls == [[PROMPTS[0]], [PROMPTS[1]], [PROMPTS[1]], [PROMPTS[2]]]
    assert load_pairs(again).to_dict() == ds.to_dict()


def test_pairs_cli_reports_bad_arguments(tmp_path, tiny_checkpoint, capsys):
    assert _pairs_cli(tmp_path, tiny_checkpoint, tmp_path / "a", "--n", "1") == 2
    assert "--n must be >= 2" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert _pairs_cli(tmp_path, tiny_checkpoint, tmp_path / "taken") == 2
    assert "already exists" in capsys.readouterr().err
    assert _pairs_cli(tmp_path, tiny_checkpoint, tmp_path / "b", "--margin", "1000") == 2
    assert "no pair has a score difference above --margin" in capsys.readouterr().err
    assert (tmp_path / "b.partial.jsonl").is_file()  # the scored candidates are kept...
    assert _pairs_cli(tmp_path, tiny_checkpoint, tmp_path / "b", "--margin", "0") == 0  # ...and re-paired
    assert "wrote 3 pairs" in capsys.readouterr().err
    assert not (tmp_path / "b.partial.jsonl").exists()
    (tmp_path / "d.partial.jsonl").write_text('{"settings": {"n": 99}}\n')
    assert _pairs_cli(tmp_path, tiny_checkpoint, tmp_path / "d") == 2
    assert "other arguments" in capsys.readouterr().err
