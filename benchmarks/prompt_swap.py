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
import json
from pathlib import Path

import numpy as np
import torch

from deramos_reward.data import load_dataset_split
from deramos_reward.data.holdout import ATTRIBUTES, CHOICES, prompt_text
from deramos_reward.encoders.base import TextTokens
from deramos_reward.model import DeRAMOS
from deramos_reward.training import cached_feature_set


@torch.no_grad()
def swap_wins(model: DeRAMOS, corpus: Path, split: str, cache: Path | None) -> dict[str, float]:
    """Attribute -> fraction of (clip, changed value) pairs where the played description scores higher TA."""
    model.eval()
    examples = load_dataset_split(corpus, split)
    features = cached_feature_set(model, examples, cache, f"swap-{split}", progress=False)
    meta = json.loads((corpus / "synthetic_meta.json").read_text())
    played = {c["wav_id"]: c["rendered"] for c in meta["clips"]}
    wins: dict[str, list[float]] = {a: [] for a in ATTRIBUTES}
    for i, ex in enumerate(examples):
        attrs = played[ex.wav_id]
        variant = int(np.random.default_rng(i).integers(18))  # one wording per clip, shared by its prompts
        prompts, which = [prompt_text(attrs, variant)], []
        for attr in ATTRIBUTES:
            for other in CHOICES[attr]:
                if other != attrs[attr]:
                    prompts.append(prompt_text({**attrs, attr: other}, variant))
                    which.append(attr)
        audio = features.batch([i] * len(prompts), "cpu").audio
        text = model.encode_text(prompts)
        ta = model.heads(audio, TextTokens(text.tokens, text.mask)).ta
        for j, attr in enumerate(which):
            wins[attr].append(float(ta[0] > ta[j + 1]))
    return {a: float(np.mean(w)) for a, w in wins.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--split", default="test")
    p.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: none)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for path in args.checkpoints:
        rates = swap_wins(DeRAMOS.from_pretrained(path), args.corpus, args.split, args.cache)
        rows.append(rates)
        print(path, " ".join(f"{a} {r:.2f}" for a, r in rates.items()), flush=True)
    mean = {a: np.mean([r[a] for r in rows]) for a in ATTRIBUTES}
    print("mean", " ".join(f"{a} {m:.3f}" for a, m in mean.items()))


if __name__ == "__main__":
    main()
