"""The TA branch learns real alignment on pretrained audio features: the demo's heads and packaged
MiniLM text encoder on CREPE frames, trained on the holdout generator's corpus (prompts drawn per
system at random; TA follows the heard instrument, tempo and mode), checked on held-out clips by
asking whether the judge prefers the prompt that names what was played."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from holdout_helpers import holdout_corpus, train_and_report

import deramos_reward as dr
from deramos_reward.config import crepe_audio_encoder
from deramos_reward.data import load_dataset_split
from deramos_reward.data.holdout import ATTRIBUTES, CHOICES, prompt_text
from deramos_reward.encoders.base import TextTokens
from deramos_reward.training import DEMO_RECIPE, TrainConfig

CORPUS = dict(
    n_systems=8,
    n_prompts=24,
    prompts_per_system=12,
    clips_per_pair=2,
    seconds=1.0,
    sample_rate=16_000,
    seed=0,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return holdout_corpus(tmp_path_factory, CORPUS)


@pytest.fixture(scope="module")
def learned(corpus, tmp_path_factory):
    cfg = dr.DeRAMOSConfig.demo()
    cfg.audio_encoder = crepe_audio_encoder()
    recipe = TrainConfig(
        model=cfg.to_dict(), lr=1e-3, batch_size=16, max_epochs=30, patience=0, seed=0, device="cpu",
        progress=False, feature_cache=str(tmp_path_factory.mktemp("features")),
    )  # fmt: skip
    report = train_and_report(recipe, corpus, tmp_path_factory.mktemp("run") / "run", swaps=False)
    meta = json.loads((corpus / "synthetic_meta.json").read_text())
    played = {c["wav_id"]: c["rendered"] for c in meta["clips"]}
    held_out = load_dataset_split(corpus, "dev") + load_dataset_split(corpus, "test")
    return report, [played[ex.wav_id] for ex in held_out]


def test_ta_and_mi_are_learned_on_held_out_clips(learned):
    metrics = learned[0]["metrics"]
    assert metrics["MI"]["utterance"]["SRCC"] > 0.6
    assert metrics["TA"]["utterance"]["SRCC"] > 0.1  # 0.23 measured; the MuQ-tiny demo preset gets 0.47-0.56


@torch.no_grad()
def test_the_prompt_naming_what_was_played_scores_higher(learned):
    """Each held-out clip against the prompt naming what it plays and, per attribute, the same prompt
    with that attribute changed: the true description should win on the instrument. (One wording and
    the first other value per attribute; ``deramos_reward.prompt_swap``, which tries every other value
    in varied wordings, gives instrument 0.52 on this small run.)"""
    report, played = learned
    model, features = report["model"], report["features"]
    model.eval()
    wins = {a: [] for a in ATTRIBUTES}
    for i, attrs in enumerate(played):
        prompts = [prompt_text(attrs)]
        for attr in ATTRIBUTES:
            other = next(v for v in CHOICES[attr] if v != attrs[attr])
            prompts.append(prompt_text({**attrs, attr: other}))
        audio = features.batch([i] * len(prompts), "cpu").audio  # the clip's cached frames, repeated
        text = model.encode_text(prompts)
        ta = model.heads(audio, TextTokens(text.tokens, text.mask)).ta
        for j, attr in enumerate(ATTRIBUTES):
            wins[attr].append(float(ta[0] > ta[j + 1]))
    rates = {a: float(np.mean(w)) for a, w in wins.items()}
    # measured: instrument 0.78, tempo 0.44, mode 0.56 (40 clips): at this size only the instrument
    # is learned; BENCHMARKS.md, "CREPE as the audio encoder", has the full-size numbers
    assert rates["instrument"] > 0.65, rates


def test_the_demo_preset_learns_ta_on_the_holdout_kind(corpus, tmp_path_factory):
    """``DeRAMOSConfig.demo()`` with the demo's recipe (``DEMO_RECIPE``) on the same corpus: TA is
    learned on held-out clips at the utterance level, MI well. Measured over training seeds 0-4: TA
    utterance SRCC 0.30 / 0.33 / 0.28 / 0.15 / 0.29, MI 0.86-0.90. This ranks clips by what the random
    MuQ frames carry (instrument, the system's artefacts), not by tempo or mode: at full size the
    prompt-swap preference of this preset is 0.62 (instrument), 0.50 (tempo), 0.47 (mode); BENCHMARKS.md,
    "TA on a hidden holdout corpus"."""
    recipe = TrainConfig(
        model="demo", seed=0, device="cpu", progress=False,
        feature_cache=str(tmp_path_factory.mktemp("demo_features")), **DEMO_RECIPE,
    )  # fmt: skip
    report = train_and_report(recipe, corpus, tmp_path_factory.mktemp("demo_run") / "run", swaps=False)
    assert report["metrics"]["MI"]["utterance"]["SRCC"] > 0.7, report["metrics"]["MI"]
    assert report["metrics"]["TA"]["utterance"]["SRCC"] > 0.1, report["metrics"]["TA"]
