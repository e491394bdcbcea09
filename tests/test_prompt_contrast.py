"""The prompt-contrast objective in training (in-batch prompt swaps, scoring a clip's cached audio
with another prompt, a training run whose log carries the contrast term) and the prompt-swap check
of a judge's alignment (``deramos_reward.prompt_swap``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from deramos_reward.data import Example, RatedClips, load_dataset_split
from deramos_reward.data.holdout import ATTRIBUTES, CHOICES, make_holdout_corpus, prompt_text
from deramos_reward.data.synthetic import make_corpus
from deramos_reward.errors import InputError
from deramos_reward.prompt_swap import WORDINGS, prompt_swap_scores, prompt_swap_wins, win_rate
from deramos_reward.training import TrainConfig, cached_feature_set, heads_forward, train
from deramos_reward.training.contrast import contrast_forward, swapped_prompts


def test_swapped_prompts_take_the_next_different_prompt():
    rows, valid = swapped_prompts([3, 3, 5, 7, 3])
    assert rows == [5, 5, 7, 3, 5] and valid.tolist() == [True] * 5
    rows, valid = swapped_prompts([2, 2, 2])
    assert rows == [2, 2, 2] and valid.tolist() == [False] * 3
    rows, valid = swapped_prompts([4])
    assert rows == [4] and valid.tolist() == [False]


def _examples(folder: Path, n: int, rate: int = 24_000) -> list[Example]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    t = np.arange(rate) / rate
    for i in range(n):
        path = folder / f"S00{i % 2}_P00{i}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (220 + 70 * i) * t)).astype(np.float32), rate)
        out.append(Example(path.stem, str(path), f"prompt number {i % 3}", 3.0, 1.0 + i % 5, f"S00{i % 2}"))
    return out


@torch.no_grad()
def test_contrast_forward_scores_each_clip_with_its_own_and_a_swapped_prompt(tiny_model, tmp_path):
    examples = _examples(tmp_path / "wav", 5)  # prompts 0, 1, 2, 0, 1
    fs = cached_feature_set(tiny_model, examples, None, "x", progress=False)
    picked = [0, 3, 1]  # own prompts 0, 0, 1 -> swapped 1, 1, 0
    out, (ta_swapped, valid) = contrast_forward(tiny_model.heads, fs, picked, "cpu")
    alone = heads_forward(tiny_model.heads, fs.batch(picked, "cpu"))
    for field in ("mi", "ta", "mi_logits", "ta_logits", "audio_embedding", "text_embedding"):
        torch.testing.assert_close(getattr(out, field), getattr(alone, field), atol=2e-5, rtol=1e-4)
    waves = [RatedClips(examples, tiny_model.sample_rate)[i]["wave"] for i in picked]
    direct = tiny_model.forward_clips(waves, ["prompt number 1", "prompt number 1", "prompt number 0"])
    torch.testing.assert_close(ta_swapped, direct.ta, atol=2e-5, rtol=1e-4)
    assert valid.tolist() == [True, True, True]
    with pytest.raises(ValueError, match="prompts has 2 rows for 3 clips"):
        fs.batch(picked, "cpu", prompts=[0, 1])


def test_a_run_with_the_contrast_logs_it_and_round_trips_its_config(tmp_path):
    root = tmp_path / "corpus"
    make_corpus(root, n_systems=4, n_prompts=4, clips_per_pair=2, seconds=1.0, seed=0)
    data = {"model": "tiny", "max_epochs": 2, "batch_size": 8, "device": "cpu", "progress": False}
    config = TrainConfig.from_dict({**data, "loss": {"use_contrast": True, "gamma": 2.0}})
    assert TrainConfig.from_dict(config.to_dict()).loss == config.loss
    train(config, root, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["train_parts"]["contrast"] > 0 and row["val_parts"]["contrast"] > 0
    plain = TrainConfig.from_dict(data)
    train(plain, root, tmp_path / "plain")
    first = json.loads((tmp_path / "plain" / "log.jsonl").read_text().splitlines()[0])
    assert "contrast" not in first["train_parts"]


@torch.no_grad()
def test_prompt_swap_scores_match_scoring_the_waves(tiny_model, tmp_path):
    root = tmp_path / "holdout"
    corpus = make_holdout_corpus(
        root,
        n_systems=2,
        n_prompts=6,
        prompts_per_system=3,
        clips_per_pair=1,
        seconds=1.0,
        sample_rate=16_000,
    )
    scores = prompt_swap_scores(tiny_model, root, "train")
    played = {c.wav_id: c.rendered for c in corpus.clips}
    examples = load_dataset_split(root, "train")
    expected = {a: [] for a in ATTRIBUTES}
    for i, ex in enumerate(examples):
        attrs = played[ex.wav_id]
        variant = int(np.random.default_rng(i).integers(WORDINGS))
        wave = RatedClips([ex], tiny_model.sample_rate)[0]["wave"]
        own = tiny_model.forward_clips([wave], [prompt_text(attrs, variant)]).ta[0]
        for attr in ATTRIBUTES:
            for other in CHOICES[attr]:
                if other != attrs[attr]:
                    changed = prompt_text({**attrs, attr: other}, variant)
                    expected[attr].append(
                        torch.stack([own, tiny_model.forward_clips([wave], [changed]).ta[0]])
                    )
    for attr in ATTRIBUTES:
        torch.testing.assert_close(scores[attr], torch.stack(expected[attr]), atol=2e-5, rtol=1e-4)
    assert scores["instrument"].shape == (4 * len(examples), 2)  # every other instrument of five
    assert scores["mode"].shape == (len(examples), 2)
    with pytest.raises(InputError, match="prompt swaps need a holdout corpus"):
        prompt_swap_wins(tiny_model, tmp_path, "train")


def test_win_rate_counts_ties_as_half():
    assert win_rate(torch.tensor([[3.0, 2.0], [1.0, 2.0], [2.5, 2.5], [4.0, 1.0]])) == 0.625
    with pytest.raises(ValueError, match="pairs must have shape"):
        win_rate(torch.zeros(0, 2))
