"""TA learns alignment, not only who made a clip: the demo preset trained on the holdout generator's
corpus (prompts drawn per system at random; TA follows the heard instrument, tempo and mode) with and
without the prompt-contrast loss, checked on held-out clips by prompt swaps: does the judge prefer the
prompt naming what a clip plays over the same prompt with one attribute changed?

A judge can reach a high system-level TA SRCC by recognising each system's artefacts and its mean TA;
that scores 0.5 on prompt swaps. Only relating the audio to the words wins them."""

from __future__ import annotations

import pytest
from holdout_helpers import holdout_corpus, train_and_report

from deramos_reward.losses import LossWeights
from deramos_reward.training import DEMO_RECIPE, TrainConfig

# half the demo's size: 8 systems x 24 prompts (of 48) x 2 clips of 2 s = 384 clips (272 train)
CORPUS = dict(
    n_systems=8,
    n_prompts=48,
    prompts_per_system=24,
    clips_per_pair=2,
    seconds=2.0,
    sample_rate=16_000,
    seed=0,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return holdout_corpus(tmp_path_factory, CORPUS)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("features"))


def _trained(corpus, cache, folder, contrast: bool) -> dict:
    """The demo preset and recipe (seed 0) -> held-out (dev + test) metrics and prompt-swap win rates."""
    recipe = TrainConfig(
        model="demo", seed=0, device="cpu", progress=False, feature_cache=cache,
        loss=LossWeights(use_contrast=contrast), **DEMO_RECIPE,
    )  # fmt: skip
    return train_and_report(recipe, corpus, folder / "run")


@pytest.fixture(scope="module")
def plain(corpus, cache, tmp_path_factory):
    return _trained(corpus, cache, tmp_path_factory.mktemp("plain"), contrast=False)


@pytest.fixture(scope="module")
def contrast(corpus, cache, tmp_path_factory):
    return _trained(corpus, cache, tmp_path_factory.mktemp("contrast"), contrast=True)


def test_the_contrast_teaches_ta_the_played_instrument(plain, contrast):
    # measured (seed 0): instrument 0.65 with the contrast, 0.47 without; tempo and mode stay near 0.5
    # on the tiny random MuQ's frames. At full size: BENCHMARKS.md, "Prompt contrast".
    assert contrast["swaps"]["instrument"] > 0.6, contrast["swaps"]
    assert contrast["swaps"]["instrument"] > plain["swaps"]["instrument"] + 0.1, (
        plain["swaps"],
        contrast["swaps"],
    )


def test_mi_is_learned_with_and_without_the_contrast(plain, contrast):
    # measured: MI utterance SRCC 0.90-0.93 (both)
    for run in (plain, contrast):
        assert run["metrics"]["MI"]["utterance"]["SRCC"] > 0.8, run["metrics"]["MI"]
    # the contrast ranks clips by TA at least as well (seed 0: 0.19 vs 0.08 utterance SRCC)
    assert contrast["metrics"]["TA"]["utterance"]["SRCC"] > 0.1, contrast["metrics"]["TA"]
