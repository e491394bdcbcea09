"""Does the CREPE preset learn alignment on a holdout corpus when trained longer or selected on TA?

Trains the ``demo-crepe`` preset of ``cross_corpus.py`` (MiniLM text, CREPE-tiny stage ``--layer`` +
64 log-mel bands) with ``train`` on a ``make_holdout_corpus`` corpus for each seed, then scores the
``best_combined`` checkpoint and the model after the last epoch on the corpus's test split: TA and MI
SRCC (utterance, system) and the prompt-swap win rates of ``prompt_swap.py`` (chance 0.5). One JSON
line per (seed, checkpoint) is appended to ``OUT/results.jsonl``; finished runs are skipped on a rerun.

    python benchmarks/crepe_ta.py CORPUS --out runs/crepe_ta/h0 --tag comb100 \\
        --max-epochs 100 --patience 30 --early-stopping combined --seeds 0 1 2
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
from prompt_swap import swap_wins

from deramos_reward import DeRAMOSConfig
from deramos_reward.config import crepe_audio_encoder
from deramos_reward.data import load_dataset_split
from deramos_reward.metrics import evaluate_both
from deramos_reward.model import DeRAMOS
from deramos_reward.training import DEMO_RECIPE, TrainConfig, cached_feature_set, predict_features, train


def score(model: DeRAMOS, corpus: Path, cache: Path) -> dict:
    """Test-split SRCCs and prompt-swap win rates of one model."""
    examples = load_dataset_split(corpus, "test")
    features = cached_feature_set(
        model, examples, cache, "swap-test", progress=False
    )  # shared with swap_wins
    mi, ta = predict_features(model.heads, features, 256, "cpu")
    m = evaluate_both(mi, features.mi, ta, features.ta, features.systems)
    srcc = {f"{a} {lv[:3]}": m[a][lv]["SRCC"] for a in ("TA", "MI") for lv in ("utterance", "system")}
    return {**srcc, **{f"swap {k}": v for k, v in swap_wins(model, corpus, "test", cache).items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tag", required=True, help="name of this recipe in the results")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--layer", type=int, default=5, help="CREPE stage index (5 = conv6, 4 = conv5, 6 = pitch)")
    p.add_argument("--max-epochs", type=int, default=DEMO_RECIPE["max_epochs"])
    p.add_argument("--patience", type=int, default=DEMO_RECIPE["patience"])
    p.add_argument("--early-stopping", default=DEMO_RECIPE["early_stopping"], choices=("loss", "combined"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DeRAMOSConfig.demo()
    cfg.audio_encoder = crepe_audio_encoder(layer=args.layer)
    recipe = {
        **DEMO_RECIPE,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "early_stopping": args.early_stopping,
    }
    cache = args.out / "features"
    done = args.out / "results.jsonl"
    results = [json.loads(x) for x in done.read_text().splitlines()] if done.exists() else []
    for seed in args.seeds:
        if any((r["tag"], r["seed"]) == (args.tag, seed) for r in results):
            continue
        t = time.time()
        config = TrainConfig(
            model=cfg.to_dict(),
            seed=seed,
            feature_cache=os.fspath(cache),
            device="cpu",
            progress=False,
            **recipe,
        )
        result = train(config, args.corpus, args.out / "runs" / f"{args.tag}-seed{seed}")
        models = {
            "best_combined": DeRAMOS.from_pretrained(result.best["best_combined"]["path"]),
            "last": result.model,
        }
        selected = {"best_combined": result.best["best_combined"]["epoch"], "last": result.epochs}
        for name, model in models.items():
            row = {
                "tag": args.tag,
                "layer": args.layer,
                "seed": seed,
                "checkpoint": name,
                "epochs": result.epochs,
                "selected_epoch": selected[name],
                "seconds": round(time.time() - t, 1),
                "recipe": recipe,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                f"{args.threads} thread(s)",
                "metrics": score(model, args.corpus, cache),
            }
            with done.open("a") as f:
                f.write(json.dumps(row) + "\n")
            results.append(row)
            print(
                f"{args.tag} seed {seed} {name:<13} epochs {result.epochs:>3} (selected {selected[name]:>3}) "
                + " ".join(f"{k} {v:.3f}" for k, v in row["metrics"].items())
                + f" [{row['seconds']:.0f} s]",
                flush=True,
            )
    rows = [r for r in results if r["tag"] == args.tag and r["seed"] in args.seeds]
    for name in ("best_combined", "last"):
        sub = [r["metrics"] for r in rows if r["checkpoint"] == name]
        if sub:
            print(
                f"mean {args.tag} {name}: "
                + " ".join(f"{k} {np.mean([s[k] for s in sub]):.3f}" for k in sub[0])
            )


if __name__ == "__main__":
    main()
