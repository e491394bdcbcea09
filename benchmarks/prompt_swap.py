"""Does a trained judge prefer the prompt that names what a clip plays? (holdout corpora)

For every clip of a split of a ``make_holdout_corpus`` corpus, the judge scores TA for the prompt
naming the clip's *played* instrument, tempo and mode and, per attribute, the same prompt with that
attribute changed (every other value, same wording). Prints the fraction of pairs the true
description wins, per attribute, for each checkpoint. Recognising a system (its artefacts) and
predicting its mean TA, which can reach a high system SRCC on a split that holds every system, scores
0.5 here: only alignment between the audio and the words wins these pairs.

    python benchmarks/prompt_swap.py CORPUS CHECKPOINT [CHECKPOINT ...] [--split test]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from deramos_reward.data.holdout import ATTRIBUTES
from deramos_reward.model import DeRAMOS
from deramos_reward.prompt_swap import prompt_swap_wins


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--split", default="test")
    p.add_argument("--cache", default=None, help="feature cache folder (default: none)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for path in args.checkpoints:
        rates = prompt_swap_wins(DeRAMOS.from_pretrained(path), args.corpus, args.split, args.cache)
        rows.append(rates)
        print(path, " ".join(f"{a} {r:.2f}" for a, r in rates.items()), flush=True)
    mean = {a: np.mean([r[a] for r in rows]) for a in ATTRIBUTES}
    print("mean", " ".join(f"{a} {m:.3f}" for a, m in mean.items()))


if __name__ == "__main__":
    main()
