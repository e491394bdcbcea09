"""TA and MI on the rendered corpus (the demo's): tiny random encoders vs the demo's pretrained text encoder.

Builds the corpus `make demo` builds (``make_rendered_corpus`` at ``DEMO_CORPUS``), trains each model
preset with the demo's recipe (``DEMO_RECIPE``, DeRA-MOS losses) for each seed, scores the
``best_combined`` checkpoint on the test split and prints a markdown table (mean ± std over seeds)
plus every run's numbers. Variants:

- ``tiny``: tiny random MuQ + tiny random RoBERTa (``DeRAMOSConfig.tiny()``);
- ``demo``: tiny random MuQ + pretrained all-MiniLM-L6-v2 with the TA residual (``DeRAMOSConfig.demo()``);
- ``demo-no-residual``: the same without ``ta_residual`` (the reference's TA branch);
- the pooling / positional-encoding ablation on the demo preset: ``demo`` is the authors' attentive
  pooling without positional encoding (the default), ``demo-tanh`` the tanh pooling of earlier
  versions, ``demo-pe`` adds the positional encoding, ``demo-tanh-pe`` both (the earlier default).

    python benchmarks/demo_encoders.py --out runs/demo_encoders --build-only   # corpus only
    python benchmarks/demo_encoders.py --out runs/demo_encoders --seeds 0 1 2 --variants demo
    python benchmarks/demo_encoders.py --out runs/demo_encoders --seeds 0 1 2 --variants tiny
    python benchmarks/demo_encoders.py --out runs/demo_encoders --variants demo demo-tanh demo-pe demo-tanh-pe
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

from deramos_reward import DeRAMOSConfig
from deramos_reward.data import load_dataset_split
from deramos_reward.data.rendered import DEMO_CORPUS, make_rendered_corpus
from deramos_reward.metrics import evaluate_both
from deramos_reward.model import DeRAMOS
from deramos_reward.training import DEMO_RECIPE, TrainConfig, cached_feature_set, predict_features, train

COLUMNS = [(a, lv) for a in ("TA", "MI") for lv in ("utterance", "system")]


VARIANTS = ("tiny", "demo", "demo-no-residual", "demo-tanh", "demo-pe", "demo-tanh-pe")


def variant_config(name: str) -> DeRAMOSConfig:
    if name == "tiny":
        return DeRAMOSConfig.tiny()
    cfg = DeRAMOSConfig.demo()
    cfg.ta_residual = name != "demo-no-residual"
    cfg.attentive_pooling = "tanh" if "tanh" in name else "linear"
    cfg.positional_encoding = name.endswith("-pe")
    return cfg


def run_one(out: Path, corpus: Path, variant: str, seed: int, recipe: dict) -> dict:
    config = TrainConfig(
        model=variant_config(variant).to_dict(),
        seed=seed,
        feature_cache=os.fspath(out / "features"),
        **recipe,
    )
    t = time.time()
    result = train(config, corpus, out / "runs" / f"{variant}-seed{seed}")
    model = DeRAMOS.from_pretrained(result.best["best_combined"]["path"])
    test = load_dataset_split(corpus, "test")
    features = cached_feature_set(model, test, out / "features", "test", progress=False)
    mi, ta = predict_features(model.heads, features, 256, "cpu")
    return {
        "variant": variant,
        "seed": seed,
        "epochs": result.epochs,
        "selected_epoch": result.best["best_combined"]["epoch"],
        "seconds": round(time.time() - t, 1),
        "test": evaluate_both(mi, features.mi, ta, features.ta, features.systems),
    }


def table(results: list[dict], variants: list[str]) -> str:
    lines = [
        "| encoders | "
        + " | ".join(f"{a} {'utt' if lv == 'utterance' else 'sys'} SRCC" for a, lv in COLUMNS)
        + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for v in variants:
        rows = [r for r in results if r["variant"] == v]
        cells = []
        for axis, level in COLUMNS:
            vals = np.array([r["test"][axis][level]["SRCC"] for r in rows], dtype=float)
            spread = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
            cells.append(f"{np.mean(vals):.3f} ± {spread:.3f} (min {np.min(vals):.3f})")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo_encoders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["tiny", "demo"], choices=VARIANTS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--early-stopping",
        default=DEMO_RECIPE["early_stopping"],
        choices=("loss", "combined"),
        help="what patience counts on (default: the demo recipe's, 'loss')",
    )
    p.add_argument("--build-only", action="store_true", help="(re)build the corpus and stop")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    corpus = out / "corpus"
    if args.build_only or not (corpus / "sets").exists():
        t = time.time()
        make_rendered_corpus(corpus, seed=0, overwrite=True, **DEMO_CORPUS)
        print(f"corpus built in {time.time() - t:.1f} s", flush=True)
    if args.build_only:
        return
    recipe = {**DEMO_RECIPE, "early_stopping": args.early_stopping, "device": "cpu", "progress": False}
    results, start = [], time.time()
    for seed in args.seeds:
        for variant in args.variants:
            r = run_one(out, corpus, variant, seed, recipe)
            results.append(r)
            m = r["test"]
            print(
                f"{variant:<17} seed {seed}: epochs {r['epochs']:>2} (selected {r['selected_epoch']:>2})  "
                + "  ".join(f"{a} {lv[:3]} {m[a][lv]['SRCC']:.3f}" for a, lv in COLUMNS)
                + f"  [{r['seconds']:.0f} s]",
                flush=True,
            )
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        "corpus": DEMO_CORPUS,
        "clips": {s: len(load_dataset_split(corpus, s)) for s in ("train", "dev", "test")},
        "recipe": recipe,
        "minutes": round((time.time() - start) / 60, 1),
    }
    md = table(results, args.variants)
    name = "demo_encoders-" + "-".join(args.variants)  # runs of other variants may share --out
    (out / f"{name}.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    (out / f"{name}.md").write_text(md + "\n")
    print(json.dumps(info))
    print(md)


if __name__ == "__main__":
    main()
