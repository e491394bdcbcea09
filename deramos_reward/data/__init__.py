"""Rated clips: readers (MusicEval layout, JSONL manifests), a torch Dataset and its collate.

```python
from deramos_reward.data import load_dataset_split, RatedClips, collate
examples = load_dataset_split("MusicEval-full", "train")     # or "ratings.jsonl"
loader = torch.utils.data.DataLoader(RatedClips(examples, 24_000), batch_size=32, collate_fn=collate)
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..frontend import load_audio, resample, to_mono
from ..validation import check_finite, check_positive_float, check_sample_rate, warn_if_loud
from .holdout import make_holdout_corpus
from .manifest import ManifestEntry, load_dataset_split, load_manifest, read_manifest, read_manifest_entries
from .musiceval import (
    DataFormatError,
    Example,
    MissingDataError,
    load_musiceval,
    prompt_id_of,
    read_mos_list,
    read_prompt_table,
    system_of,
)
from .ratings import MOS_SCALE, check_rating_scale
from .rendered import make_rendered_corpus
from .synthetic import make_corpus

__all__ = [
    "DataFormatError",
    "Example",
    "MOS_SCALE",
    "ManifestEntry",
    "MissingDataError",
    "RatedBatch",
    "RatedClips",
    "check_rating_scale",
    "collate",
    "load_dataset_split",
    "load_manifest",
    "load_musiceval",
    "make_corpus",
    "make_holdout_corpus",
    "make_rendered_corpus",
    "prompt_id_of",
    "read_manifest",
    "read_manifest_entries",
    "read_mos_list",
    "read_prompt_table",
    "system_of",
]


class RatedClips(torch.utils.data.Dataset):
    """Examples -> mono waveforms at ``sample_rate`` with their prompts and labels.

    Args:
        examples: from ``load_dataset_split`` / ``load_musiceval`` / ``load_manifest``.
        sample_rate: rate the model wants (e.g. ``config.sample_rate``); files are resampled.
        max_seconds: if given, keep only the first ``max_seconds`` of each clip (after resampling).

    An item is a dict: ``wave`` [T] float32, ``sample_rate``, ``prompt``, ``mi``, ``ta`` (float;
    ``nan`` when unlabeled), ``system``, ``wav_id``.
    """

    def __init__(self, examples: Sequence[Example], sample_rate: int, max_seconds: float | None = None):
        if isinstance(examples, Example) or not isinstance(examples, Sequence):
            raise TypeError(f"examples must be a list of Example, got {type(examples).__name__}")
        for i, ex in enumerate(examples):
            if not isinstance(ex, Example):
                raise TypeError(f"examples[{i}] must be an Example, got {type(ex).__name__}")
        check_positive_float(max_seconds, "max_seconds", optional=True)
        self.examples = list(examples)
        self.sample_rate = check_sample_rate(sample_rate)
        self.max_samples = None if max_seconds is None else max(1, int(round(max_seconds * self.sample_rate)))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        ex = self.examples[index]
        audio, rate = load_audio(ex.path)  # [C, T]
        warn_if_loud(check_finite(audio, f"audio file {ex.path!r}"), f"audio file {ex.path!r}")
        wave = resample(to_mono(audio), rate, self.sample_rate)
        if self.max_samples is not None:
            wave = wave[: self.max_samples]
        return {
            "wave": wave.to(torch.float32).contiguous(),
            "sample_rate": self.sample_rate,
            "prompt": ex.prompt,
            "mi": math.nan if ex.mi is None else float(ex.mi),
            "ta": math.nan if ex.ta is None else float(ex.ta),
            "system": ex.system,
            "wav_id": ex.wav_id,
        }


@dataclass
class RatedBatch:
    """A batch of clips of different lengths (no padding).

    waves: B tensors [T_i] at ``sample_rate``. prompts, systems, wav_ids: B strings.
    mi, ta: [B] float32 labels, ``nan`` where a clip is unlabeled.
    """

    waves: list[torch.Tensor]
    prompts: list[str]
    mi: torch.Tensor
    ta: torch.Tensor
    systems: list[str]
    wav_ids: list[str]
    sample_rate: int

    @property
    def labeled(self) -> bool:
        """True when every clip has both labels."""
        return bool(torch.isfinite(self.mi).all() and torch.isfinite(self.ta).all())

    def to(self, device: torch.device | str) -> RatedBatch:
        """Move waves and labels to ``device``."""
        return RatedBatch(
            [w.to(device) for w in self.waves],
            self.prompts,
            self.mi.to(device),
            self.ta.to(device),
            self.systems,
            self.wav_ids,
            self.sample_rate,
        )


def collate(items: Sequence[dict]) -> RatedBatch:
    """``DataLoader`` collate for ``RatedClips`` items -> ``RatedBatch``."""
    if not items:
        raise ValueError("collate got an empty list of items")
    rates = {item["sample_rate"] for item in items}
    if len(rates) != 1:
        raise ValueError(f"items have different sample rates {sorted(rates)}; expected one")
    return RatedBatch(
        waves=[item["wave"] for item in items],
        prompts=[item["prompt"] for item in items],
        mi=torch.tensor([item["mi"] for item in items], dtype=torch.float32),
        ta=torch.tensor([item["ta"] for item in items], dtype=torch.float32),
        systems=[item["system"] for item in items],
        wav_ids=[item["wav_id"] for item in items],
        sample_rate=rates.pop(),
    )
