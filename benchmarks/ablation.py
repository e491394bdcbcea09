"""Ablation of the DeRA-MOS training objectives on the synthetic corpus (tiny encoders, CPU).

Trains the same tiny model with each loss setting and several seeds, evaluates the
``best_combined`` checkpoint (selected on the dev split by (utterance MI SRCC + system TA SRCC)/2,
a criterion that does not depend on the loss) on the test split, and prints a markdown table of
utterance/system SRCC and KTAU for MI and TA as mean ± standard deviation over seeds.

Encoder features are extracted once and shared by every run (the tiny backbone is the same for
all seeds; seeds change the heads' initialisation, the shuffling and dropout).

    python benchmarks/ablation.py --out runs/ablation --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from deramos_reward.data import load_dataset_split, make_corpus
from deramos_reward.losses import LossWeights
from deramos_reward.metrics import evaluate_both
from deramos_reward.model import DeRAMOS
from deramos_reward.training import TrainConfig, cached_feature_set, predict_features, train

VARIANTS = {
    "regression": "point-wise regression (L1 on the expected score)",
    "distribution": "distribution loss only (KL to Gaussian soft labels)",
    "distribution+balr": "+ BALR (alpha 0.2)",
    "distribution+sama": "+ SAMA (beta 0.3)",
    "deramos": "+ BALR + SAMA (DeRA-MOS)",
}
COLUMNS = [
    (axis, level, m) for axis in ("MI", "TA") for level in ("utterance", "system") for m in ("SRCC", "KTAU")
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/ablation", help="corpus, feature cache, runs and results go here")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--systems", type=int, default=10)
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--clips-per-pair", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--corpus-seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def run_one(args, corpus: Path, cache: Path, variant: str, seed: int) -> dict:
    run_dir = Path(args.out) / "runs" / f"{variant}-seed{seed}"
    config = TrainConfig(
        model="tiny",
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        patience=args.patience,
        seed=seed,
        loss=LossWeights.preset(variant),
        feature_cache=os.fspath(cache),
        device="cpu",
        progress=False,
    )
    result = train(config, corpus, run_dir)  # resumes / returns at once if already finished
    model = DeRAMOS.from_pretrained(result.best["best_combined"]["path"])
    test = load_dataset_split(corpus, "test")
    features = cached_feature_set(model, test, cache, "test", progress=False)
    mi, ta = predict_features(model.heads, features, 256, "cpu")
    metrics = evaluate_both(mi, features.mi, ta, features.ta, features.systems)
    return {
        "variant": variant,
        "seed": seed,
        "epochs": result.epochs,
        "selected_epoch": result.best["best_combined"]["epoch"],
        "test": metrics,
    }


def table(results: list[dict], variants: list[str]) -> str:
    head = (
        "| objective | "
        + " | ".join(f"{a} {'utt' if lv == 'utterance' else 'sys'} {m}" for a, lv, m in COLUMNS)
        + " |"
    )
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for v in variants:
        rows = [r for r in results if r["variant"] == v]
        cells = []
        for axis, level, m in COLUMNS:
            vals = np.array([r["test"][axis][level][m] for r in rows], dtype=float)
            cells.append(f"{np.nanmean(vals):.3f} ± {np.nanstd(vals, ddof=1) if len(vals) > 1 else 0.0:.3f}")
        lines.append(f"| {VARIANTS[v]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    corpus, cache = out / "corpus", out / "features"
    if not (corpus / "sets").exists():
        make_corpus(
            corpus,
            n_systems=args.systems,
            n_prompts=args.prompts,
            clips_per_pair=args.clips_per_pair,
            seconds=args.seconds,
            sample_rate=24_000,
            seed=args.corpus_seed,
        )
    sizes = {s: len(load_dataset_split(corpus, s)) for s in ("train", "dev", "test")}
    results, start = [], time.time()
    for seed in args.seeds:
        for variant in args.variants:
            t = time.time()
            r = run_one(args, corpus, cache, variant, seed)
            results.append(r)
            m = r["test"]
            print(
                f"{variant:<18} seed {seed}: epochs {r['epochs']:>3} (selected {r['selected_epoch']:>3})  "
                f"MI sys SRCC {m['MI']['system']['SRCC']:.3f}  TA sys SRCC {m['TA']['system']['SRCC']:.3f}  "
                f"TA utt SRCC {m['TA']['utterance']['SRCC']:.3f}  [{time.time() - t:.0f} s]",
                flush=True,
            )
    md = table(results, args.variants)
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {args.threads} threads",
        "corpus": {
            "systems": args.systems,
            "prompts": args.prompts,
            "clips_per_pair": args.clips_per_pair,
            "seconds": args.seconds,
            "seed": args.corpus_seed,
            "clips": sizes,
        },
        "train": {
            "epochs": args.epochs,
            "patience": args.patience,
            "lr": args.lr,
            "batch_size": args.batch_size,
        },
        "seeds": args.seeds,
        "minutes": round((time.time() - start) / 60, 1),
    }
    (out / "ablation.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    (out / "ablation.md").write_text(md + "\n")
    print(json.dumps(info))
    print(md)


if __name__ == "__main__":
    main()
