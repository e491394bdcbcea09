"""Prompt swaps: does a judge's TA follow the words, or only who made the clip?

On a corpus written by ``make_holdout_corpus`` every clip's *played* instrument, tempo and mode are
known. For each clip the judge scores TA for the prompt naming what it plays and, per attribute, for
the same prompt with that attribute changed (every other value, the same wording). The fraction of
these pairs that the true description wins is 0.5 for a judge that ignores the prompt, however well
it recognises a system and its mean TA; only alignment between the audio and the words raises it.

```python
from deramos_reward.prompt_swap import prompt_swap_wins
prompt_swap_wins(model, "holdout_corpus", "test")  # -> {"instrument": 0.82, "tempo": 0.58, "mode": 0.46}
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .data import load_dataset_split
from .data.holdout import ATTRIBUTES, CHOICES, prompt_text
from .encoders.base import TextTokens
from .errors import InputError
from .model import DeRAMOS
from .training.features import cached_feature_set

WORDINGS = 18  # prompt_text's wordings; each clip's prompts share one, drawn from the clip's index


def _played(corpus: Path) -> dict[str, dict[str, str]]:
    meta_file = corpus / "synthetic_meta.json"
    if not meta_file.is_file():
        raise InputError(
            f"corpus {os.fspath(corpus)!r} has no synthetic_meta.json: prompt swaps need a holdout corpus"
        )
    meta = json.loads(meta_file.read_text())
    if not all("rendered" in c for c in meta.get("clips", [])):
        raise InputError(
            f"corpus {os.fspath(corpus)!r} was not written by make_holdout_corpus (no played attributes)"
        )
    return {c["wav_id"]: c["rendered"] for c in meta["clips"]}


@torch.no_grad()
def prompt_swap_scores(
    model: DeRAMOS, corpus: str | os.PathLike, split: str = "test", cache: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """Attribute -> TA pairs [n_pairs, 2]: (the played description, the same with that attribute changed).

    Args:
        model: the judge (put in eval mode).
        corpus: a folder written by ``make_holdout_corpus``.
        split: which split's clips (``"train"``, ``"dev"``, ``"test"``).
        cache: optional feature-cache folder (the encoders run once per clip).

    Rows run over the split's clips in order and, per clip, over the attribute's other values.
    """
    corpus = Path(corpus)
    played = _played(corpus)
    model.eval()
    examples = load_dataset_split(corpus, split)
    features = cached_feature_set(model, examples, cache, f"swap-{split}", progress=False)
    device = next(model.heads.parameters()).device
    pairs: dict[str, list[torch.Tensor]] = {a: [] for a in ATTRIBUTES}
    for i, ex in enumerate(examples):
        attrs = played[ex.wav_id]
        variant = int(np.random.default_rng(i).integers(WORDINGS))
        prompts, which = [prompt_text(attrs, variant)], []
        for attr in ATTRIBUTES:
            for other in CHOICES[attr]:
                if other != attrs[attr]:
                    prompts.append(prompt_text({**attrs, attr: other}, variant))
                    which.append(attr)
        audio = features.batch([i] * len(prompts), device).audio  # the clip's cached frames, repeated
        text = model.encode_text(prompts)
        ta = model.heads(audio, TextTokens(text.tokens.to(device), text.mask.to(device))).ta.float().cpu()
        for j, attr in enumerate(which):
            pairs[attr].append(torch.stack([ta[0], ta[j + 1]]))
    return {a: torch.stack(rows) for a, rows in pairs.items()}


def prompt_swap_wins(
    model: DeRAMOS, corpus: str | os.PathLike, split: str = "test", cache: str | os.PathLike | None = None
) -> dict[str, float]:
    """Attribute -> fraction of ``prompt_swap_scores``'s pairs the played description wins (a tie: half).

    0.5 for a judge deaf to the words; see the module docstring.
    """
    return {a: win_rate(ta) for a, ta in prompt_swap_scores(model, corpus, split, cache).items()}


def win_rate(pairs: torch.Tensor) -> float:
    """TA pairs [n, 2] -> fraction of rows whose first score is higher (a tie counts half)."""
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise ValueError(f"pairs must have shape [n >= 1, 2], got {tuple(pairs.shape)}")
    first, second = pairs[:, 0], pairs[:, 1]
    return float(((first > second).float() + 0.5 * (first == second).float()).mean())
