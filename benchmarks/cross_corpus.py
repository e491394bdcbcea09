"""Cross-corpus: train the judge on one generator's corpus, test it on another's.

Two corpora of the same size (768 clips of 3 s, 8 systems), written by different code:
``rendered`` (the demo's: SoundFont, ``make_rendered_corpus`` at ``DEMO_CORPUS``) and ``holdout``
(numpy synthesis, other artefacts and wording, prompts drawn per system at random:
``make_holdout_corpus`` at ``HOLDOUT_CORPUS``). Each preset is trained with the demo's recipe
(``DEMO_RECIPE``) for each seed on each corpus (train split; dev split picks ``best_combined``), and
scored on its own test split and on the *whole* other corpus. Presets:

- ``demo``: ``DeRAMOSConfig.demo()`` as it was before CREPE (tiny random MuQ + packaged MiniLM);
- ``demo-crepe``: the same heads and text encoder on pretrained CREPE-tiny frames
  (``crepe_audio_encoder()``).

``--contrast GAMMA`` adds the prompt-contrast term to the loss (``LossWeights.use_contrast``, weight
GAMMA, at ``--contrast-temperature``); its runs are kept apart from the plain ones. Trained on the
holdout corpus, each run also reports the prompt-swap win rates on its test split
(``deramos_reward.prompt_swap``): whether TA prefers the prompt naming what a clip plays.

Prints a markdown table (mean ± std over seeds, min) per train corpus -> test set, plus every run.

    python benchmarks/cross_corpus.py --out runs/cross_corpus --seeds 0 1 2
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
from deramos_reward.config import crepe_audio_encoder
from deramos_reward.data import load_dataset_split
from deramos_reward.data.holdout import make_holdout_corpus
from deramos_reward.data.rendered import DEMO_CORPUS, make_rendered_corpus
from deramos_reward.losses import LossWeights
from deramos_reward.metrics import evaluate_both
from deramos_reward.model import DeRAMOS
from deramos_reward.prompt_swap import prompt_swap_wins
from deramos_reward.training import DEMO_RECIPE, TrainConfig, cached_feature_set, predict_features, train

# the same size as the demo corpus: 8 systems x 24 prompts (drawn from 48) x 4 clips of 3 s
HOLDOUT_CORPUS = dict(
    n_systems=8, n_prompts=48, prompts_per_system=24, clips_per_pair=4, seconds=3.0, sample_rate=22_050
)
COLUMNS = [(a, lv) for a in ("TA", "MI") for lv in ("utterance", "system")]
PRESETS = ("demo", "demo-crepe")
CORPORA = ("rendered", "holdout")


def preset(name: str) -> DeRAMOSConfig:
    cfg = DeRAMOSConfig.demo()
    if name == "demo":  # the demo preset before CREPE: tiny random MuQ
        cfg.audio_encoder = DeRAMOSConfig.tiny().audio_encoder
    else:
        cfg.audio_encoder = crepe_audio_encoder()
    return cfg


def build(out: Path, holdout_seed: int = 0) -> dict[str, Path]:
    roots = {c: out / c for c in CORPORA}
    if not (roots["rendered"] / "sets").exists():
        make_rendered_corpus(roots["rendered"], seed=0, overwrite=True, **DEMO_CORPUS)
    if not (roots["holdout"] / "sets").exists():
        make_holdout_corpus(roots["holdout"], seed=holdout_seed, overwrite=True, **HOLDOUT_CORPUS)
    return roots


def test_sets(roots: dict[str, Path], trained_on: str) -> dict[str, tuple[Path, list]]:
    """name -> (corpus, examples): the training corpus's test split and every clip of the other."""
    other = next(c for c in CORPORA if c != trained_on)
    every = [ex for s in ("train", "dev", "test") for ex in load_dataset_split(roots[other], s)]
    return {f"{trained_on} test": load_dataset_split(roots[trained_on], "test"), f"{other} (all)": every}


def run_one(
    out: Path, roots: dict[str, Path], name: str, corpus: str, seed: int, recipe: dict, loss: LossWeights
) -> list[dict]:
    config = TrainConfig(
        model=preset(name).to_dict(),
        seed=seed,
        feature_cache=os.fspath(out / "features"),
        loss=loss,
        **recipe,
    )
    t = time.time()
    result = train(config, roots[corpus], out / "runs" / f"{name}{_tag(loss)}-{corpus}-seed{seed}")
    model = DeRAMOS.from_pretrained(result.best["best_combined"]["path"])
    swaps = (
        prompt_swap_wins(model, roots["holdout"], "test", out / "features") if corpus == "holdout" else None
    )
    rows = []
    for test_name, examples in test_sets(roots, corpus).items():
        cache_name = test_name.replace(" ", "_").replace("(", "").replace(")", "")
        features = cached_feature_set(model, examples, out / "features", cache_name, progress=False)
        mi, ta = predict_features(model.heads, features, 256, "cpu")
        rows.append(
            {
                "preset": name + _tag(loss),
                "trained_on": corpus,
                "test": test_name,
                "seed": seed,
                "epochs": result.epochs,
                "selected_epoch": result.best["best_combined"]["epoch"],
                "seconds": round(time.time() - t, 1),
                "metrics": evaluate_both(mi, features.mi, ta, features.ta, features.systems),
                "prompt_swap": swaps if test_name == f"{corpus} test" else None,
            }
        )
    return rows


def _tag(loss: LossWeights) -> str:
    """The run-name suffix of a loss with the prompt contrast on ("" for the paper's loss)."""
    return f"+contrast{loss.gamma:g}@{loss.contrast_temperature:g}" if loss.use_contrast else ""


def table(results: list[dict]) -> str:
    lines = [
        "| trained on -> tested on | preset | "
        + " | ".join(f"{a} {'utt' if lv == 'utterance' else 'sys'} SRCC" for a, lv in COLUMNS)
        + " | swap: instrument | tempo | mode |",
        "|" + "---|" * (len(COLUMNS) + 5),
    ]
    keys = list(dict.fromkeys((r["trained_on"], r["test"], r["preset"]) for r in results))
    for trained_on, test, name in keys:
        rows = [r for r in results if (r["trained_on"], r["test"], r["preset"]) == (trained_on, test, name)]
        cells = []
        for axis, level in COLUMNS:
            vals = np.array([r["metrics"][axis][level]["SRCC"] for r in rows], dtype=float)
            spread = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
            cells.append(f"{np.mean(vals):.3f} ± {spread:.3f} (min {np.min(vals):.3f})")
        swaps = [r["prompt_swap"] for r in rows if r.get("prompt_swap")]
        for attr in ("instrument", "tempo", "mode"):
            cells.append(f"{np.mean([s[attr] for s in swaps]):.2f}" if swaps else "")
        lines.append(f"| {trained_on} -> {test} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/cross_corpus")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--train-on", nargs="+", default=list(CORPORA), choices=CORPORA)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--holdout-seed", type=int, default=0, help="corpus seed of the holdout corpus (default 0)"
    )
    p.add_argument(
        "--early-stopping",
        default=DEMO_RECIPE["early_stopping"],
        choices=("loss", "combined"),
        help="what patience counts on (default: the demo recipe's, 'loss')",
    )
    p.add_argument("--contrast", type=float, default=0.0, help="prompt-contrast weight (default 0: off)")
    p.add_argument("--contrast-temperature", type=float, default=LossWeights().contrast_temperature)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    loss = LossWeights(
        use_contrast=args.contrast > 0,
        gamma=args.contrast or 1.0,
        contrast_temperature=args.contrast_temperature,
    )
    loss.validate()
    out, start = Path(args.out), time.time()
    roots = build(out, args.holdout_seed)
    recipe = {**DEMO_RECIPE, "early_stopping": args.early_stopping, "device": "cpu", "progress": False}
    results = []
    done = out / "results.jsonl"  # finished runs survive an interruption; a rerun skips them
    if done.exists():
        results = [json.loads(line) for line in done.read_text().splitlines() if line.strip()]
    for seed in args.seeds:
        for corpus in args.train_on:
            for name in args.presets:
                key = (name + _tag(loss), corpus, seed)
                if any((r["preset"], r["trained_on"], r["seed"]) == key for r in results):
                    continue
                rows = run_one(out, roots, name, corpus, seed, recipe, loss)
                with done.open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
                results += rows
                for r in rows:
                    m = r["metrics"]
                    print(
                        f"{name + _tag(loss):<11} {corpus} -> {r['test']:<14} seed {seed}: epochs {r['epochs']:>2} "
                        f"(selected {r['selected_epoch']:>2})  "
                        + "  ".join(f"{a} {lv[:3]} {m[a][lv]['SRCC']:.3f}" for a, lv in COLUMNS)
                        + f"  [{r['seconds']:.0f} s]",
                        flush=True,
                    )
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        "rendered": DEMO_CORPUS,
        "holdout": {**HOLDOUT_CORPUS, "seed": args.holdout_seed},
        "recipe": recipe,
        "loss": loss.to_dict(),
        "minutes": round((time.time() - start) / 60, 1),
    }
    md = table([r for r in results if r["seed"] in args.seeds])
    (out / "cross_corpus.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    (out / "cross_corpus.md").write_text(md + "\n")
    print(json.dumps(info))
    print(md)


if __name__ == "__main__":
    main()
