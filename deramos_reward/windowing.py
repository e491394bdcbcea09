"""Scoring clips of any length in windows: encode the windows, combine their outputs per clip.

``plan_windows`` (in ``frontend``) cuts clips into windows of at most the encoder's length.
``encode_windows`` runs the audio encoder over them, and ``combine_windows`` turns one output
row per window into one row per clip. ``DeRAMOS.forward_clips`` (inference) and the training
feature cache (``training.features``) both go through these two functions, so training sees
exactly the windows, the batching and the combination that inference uses.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .encoders.base import AudioEncoder, AudioFrames
from .frontend import Window
from .heads import DeRAMOSOutput

OUTPUT_FIELDS = tuple(f.name for f in dataclasses.fields(DeRAMOSOutput))
# Combined per clip as a length-weighted mean of the values / of the bin probabilities.
MEAN_FIELDS = ("mi", "ta", "audio_embedding", "text_embedding")
LOGIT_FIELDS = ("mi_logits", "ta_logits")
# Combined as the spread of the mixture of the windows' distributions (law of total variance).
STD_FIELDS = ("mi_std", "ta_std")


def encode_windows(
    encoder: AudioEncoder,
    waves: Sequence[torch.Tensor],
    windows: Sequence[Window],
    batch_size: int,
    device: torch.device | str,
) -> Iterator[tuple[list[int], AudioFrames]]:
    """Run ``encoder`` over the ``windows`` of mono clips ``waves`` (each [T_i]).

    Windows of exactly equal length go through the encoder together, at most ``batch_size`` at
    a time, so no clip's window is padded to another's: a clip's frames (and score) never depend
    on the rest of the batch (MuQ's convolutions would see the padding). A window shorter than
    ``encoder.min_samples`` is zero-padded to it, with the padding masked.

    Yields, per encoder pass, ``(indices, frames)``: the indices into ``windows`` of the ``n``
    windows of the pass, and their frames [n, N, D] with mask [n, N] on ``device``.
    """
    groups: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(windows):
        groups[w.length].append(i)
    min_samples = encoder.min_samples
    for length, members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            segs = torch.stack([waves[windows[i].clip][windows[i].start : windows[i].stop] for i in chunk])
            if length < min_samples:
                segs = nn.functional.pad(segs, (0, min_samples - length))
            yield chunk, encoder(segs.to(device), torch.full((len(chunk),), length))


def combine_windows(windows: Sequence[Window], outputs: DeRAMOSOutput, n_clips: int) -> DeRAMOSOutput:
    """One output row per window -> one row per clip.

    Args:
        windows: W windows of ``n_clips`` clips (``Window.clip`` says whose; only the lengths
            matter here).
        outputs: the heads' outputs for the windows, row ``w`` for ``windows[w]``: fields [W] /
            [W, n_bins] / [W, D].
    Returns:
        Outputs [n_clips, ...]. A clip with one window keeps that window's row unchanged; a clip
        with several gets the mean of their rows weighted by window length (scores and
        embeddings directly, bin logits as the log of the weighted mean of their softmax, score
        standard deviations as the spread of that mixture).
    """
    by_clip: list[list[int]] = [[] for _ in range(n_clips)]
    for i, w in enumerate(windows):
        by_clip[w.clip].append(i)
    if all(members == [clip] for clip, members in enumerate(by_clip)):
        return outputs  # one window per clip, in clip order: nothing to combine
    present = [f for f in OUTPUT_FIELDS if getattr(outputs, f) is not None]  # spreads are optional
    rows: dict[str, list[torch.Tensor]] = {f: [] for f in present}
    for members in by_clip:
        if len(members) == 1:
            for f in present:
                rows[f].append(getattr(outputs, f)[members[0]])
            continue
        index = torch.tensor(members, device=outputs.mi.device)
        lengths = torch.tensor([windows[i].length for i in members], dtype=torch.float64)
        weights = (lengths / lengths.sum()).to(outputs.mi.dtype).to(outputs.mi.device)
        for f in MEAN_FIELDS:
            stacked = getattr(outputs, f).index_select(0, index)
            w = weights.to(stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
            rows[f].append((w * stacked).sum(0))  # elementwise: autocast keeps the dtype
        for f in LOGIT_FIELDS:
            probs = torch.softmax(getattr(outputs, f).index_select(0, index).float(), -1)
            rows[f].append(torch.log((weights.to(probs.dtype)[:, None] * probs).sum(0)))
        for axis in ("mi", "ta") if "mi_std" in present else ():
            means = getattr(outputs, axis).index_select(0, index)
            stds = getattr(outputs, f"{axis}_std").index_select(0, index)
            w = weights.to(means.dtype)
            variance = (w * (stds.pow(2) + means.pow(2))).sum(0) - (w * means).sum(0).pow(2)
            rows[f"{axis}_std"].append(variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt())
    return DeRAMOSOutput(**{f: torch.stack(v) for f, v in rows.items()})


def concat_outputs(parts: Sequence[tuple[Sequence[int], DeRAMOSOutput]], count: int) -> DeRAMOSOutput:
    """Outputs of several passes -> one output [count, ...] in row order.

    ``parts``: ``(indices, outputs [n, ...])`` per pass (as ``encode_windows`` yields indices),
    covering each of the rows ``0 .. count - 1`` once. Row ``i`` of the result is row ``i``.
    """
    order = [i for indices, _ in parts for i in indices]
    in_order = order == list(range(count))
    if len(parts) == 1 and in_order:
        return parts[0][1]
    present = [f for f in OUTPUT_FIELDS if getattr(parts[0][1], f) is not None]
    fields = {f: torch.cat([getattr(out, f) for _, out in parts]) for f in present}
    if not in_order:
        inverse = torch.empty(count, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(count)
        inverse = inverse.to(fields["mi"].device)
        fields = {f: v.index_select(0, inverse) for f, v in fields.items()}
    return DeRAMOSOutput(**fields)


__all__ = [
    "LOGIT_FIELDS",
    "MEAN_FIELDS",
    "OUTPUT_FIELDS",
    "STD_FIELDS",
    "combine_windows",
    "concat_outputs",
    "encode_windows",
]
