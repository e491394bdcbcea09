"""In-batch prompt swaps for the prompt-contrast objective (``LossWeights.use_contrast``).

Each clip of a batch is scored twice in one forward pass: with its own prompt and with the prompt
of another clip of the same batch (the next one, in the batch's shuffled order, whose prompt
differs). ``deramos_loss`` then asks the own prompt to win, weighted by the clip's TA label. The
audio is the same in both rows, so only the relation between audio and words can tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace

import torch

from ..heads import DeRAMOSOutput
from .features import FeatureSet, heads_forward


def swapped_prompts(own: Sequence[int]) -> tuple[list[int], torch.Tensor]:
    """Each clip's prompt row [B] -> (another clip's different prompt row [B], valid [B] bool).

    Clip ``b`` takes the prompt of the first clip after it (cyclically) whose prompt differs from
    its own; when every clip of the batch shares one prompt there is none, ``valid[b]`` is False
    and the row is its own.
    """
    own = [int(p) for p in own]
    swapped, valid = [], []
    for b, p in enumerate(own):
        other = next(
            (own[(b + k) % len(own)] for k in range(1, len(own)) if own[(b + k) % len(own)] != p), None
        )
        swapped.append(p if other is None else other)
        valid.append(other is not None)
    return swapped, torch.tensor(valid, dtype=torch.bool)


def _rows(out: DeRAMOSOutput, rows: slice) -> DeRAMOSOutput:
    return replace(
        out, **{f.name: getattr(out, f.name)[rows] for f in fields(out) if getattr(out, f.name) is not None}
    )


def contrast_forward(
    heads: torch.nn.Module, data: FeatureSet, indices: Sequence[int], device: torch.device | str
) -> tuple[DeRAMOSOutput, tuple[torch.Tensor, torch.Tensor]]:
    """Clips ``indices`` [B] -> (their outputs with their own prompts [B], (TA with swapped prompts [B], valid [B])).

    One forward of ``2B`` rows (own prompts, then swapped), so a DDP-wrapped ``heads`` runs once per step.
    """
    indices = [int(i) for i in indices]
    own = [int(data.features.clip_prompt[c]) for c in indices]
    swapped, valid = swapped_prompts(own)
    both = heads_forward(heads, data.batch(indices + indices, device, own + swapped))
    n = len(indices)
    return _rows(both, slice(0, n)), (both.ta[n:], valid.to(both.ta.device))


def loss_forward(
    heads: torch.nn.Module,
    data: FeatureSet,
    indices: Sequence[int],
    device: torch.device | str,
    use_contrast: bool,
) -> tuple[DeRAMOSOutput, tuple[torch.Tensor, torch.Tensor] | None]:
    """The forward pass ``deramos_loss`` needs on clips ``indices`` [B] -> (outputs [B], its ``contrast_inputs``).

    With ``use_contrast`` (``LossWeights.use_contrast``) this is ``contrast_forward``; without, the
    plain forward and ``None``.
    """
    if use_contrast:
        return contrast_forward(heads, data, indices, device)
    return heads_forward(heads, data.batch(indices, device)), None
