"""Train a judge on a holdout-kind corpus and report it on the held-out clips (dev + test): the
learning tests of the TA branch share this."""

from __future__ import annotations

from pathlib import Path

import torch

import deramos_reward as dr
from deramos_reward.data import load_dataset_split
from deramos_reward.data.holdout import make_holdout_corpus
from deramos_reward.metrics import evaluate_both
from deramos_reward.prompt_swap import prompt_swap_scores, win_rate
from deramos_reward.training import TrainConfig, cached_feature_set, predict_features, train

HELD_OUT = ("dev", "test")


def train_and_report(recipe: TrainConfig, corpus: Path, run_dir: Path, swaps: bool = True) -> dict:
    """Train ``recipe`` on ``corpus`` -> its ``best_combined`` checkpoint on the held-out clips:
    ``{"model", "features"`` (their cached ``FeatureSet``), ``"metrics"`` (``evaluate_both``) and,
    when asked, ``"swaps"`` (attribute -> ``deramos_reward.prompt_swap`` win rate)``}``."""
    result = train(recipe, corpus, run_dir)
    model = dr.DeRAMOS.from_pretrained(result.best["best_combined"]["path"])
    held_out = [ex for split in HELD_OUT for ex in load_dataset_split(corpus, split)]
    features = cached_feature_set(model, held_out, recipe.feature_cache, "held_out", progress=False)
    mi, ta = predict_features(model.heads, features, 64, "cpu")
    metrics = evaluate_both(mi, features.mi, ta, features.ta, features.systems)
    report = {"model": model, "features": features, "metrics": metrics}
    if swaps:
        pairs = [prompt_swap_scores(model, corpus, split, recipe.feature_cache) for split in HELD_OUT]
        report["swaps"] = {a: win_rate(torch.cat([p[a] for p in pairs])) for a in pairs[0]}
    return report


def holdout_corpus(tmp_path_factory, design: dict) -> Path:
    """A ``make_holdout_corpus`` corpus of ``design`` in a fresh temporary folder."""
    root = tmp_path_factory.mktemp("holdout") / "corpus"
    make_holdout_corpus(root, **design)
    return root
