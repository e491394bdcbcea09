"""``reference_scores``: score exactly as the authors' evaluation loop does, quirks included.

The authors' loop (``MosDataset`` + ``evaluate_model``) resamples each clip to 24 kHz, crops it to
its first 30 s or zero-pads it to exactly 30 s, and scores batches of 16 in which:
- prompts are padded to the batch's longest, and there is no audio mask;
- the sinusoidal positional encoding is added only when the batch holds one clip (its table is laid
  out ``(max_len, 1, D)``, so only a batch of one matches its batch-first branch);
- the TA pool is handed ``attention_mask == 0`` and blanks where that is 0: a prompt without padding
  is pooled by a plain mean over its tokens, a padded one over its padding positions only.
``DeRAMOS.forward`` keeps this package's semantics (windows, masks, a score independent of the
batch); on 30 s clips and unpadded prompts in batches of two or more, the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from ..encoders.base import TextTokens
from ..frontend import to_clips
from ..heads import DeRAMOSHeads
from ..layers import SinusoidalPositionalEncoding, expected_score
from ..model import DeRAMOS
from ..validation import check_positive_int, check_prompts

REFERENCE_SAMPLE_RATE = 24_000
REFERENCE_SECONDS = 30
REFERENCE_SAMPLES = REFERENCE_SAMPLE_RATE * REFERENCE_SECONDS
POSITION_TABLE_LENGTH = 5000  # the reference's PositionalEncoding(max_len=5000)


def reference_scores(
    model: DeRAMOS,
    audio: object,
    prompts: str | Sequence[str],
    *,
    sample_rate: int | None = None,
    batch_size: int = 16,
) -> list[dict[str, float]]:
    """Rows ``{"mi", "ta"}`` in input order, computed batch by batch as the reference evaluates.

    Args:
        model: a judge at 24 kHz (MuQ), e.g. a converted reference checkpoint.
        audio: file paths or arrays/tensors, as ``deramos_reward.score`` takes them.
        prompts: one per clip.
        sample_rate: rate of array inputs; files carry their own.
        batch_size: clips per batch (the reference evaluates in batches of 16); a batch's scores
            depend on its other members, as in the reference.
    """
    if not isinstance(model, DeRAMOS):
        raise TypeError(f"model must be a deramos_reward.DeRAMOS, got {type(model).__name__}")
    if model.sample_rate != REFERENCE_SAMPLE_RATE:
        raise ValueError(
            f"the reference protocol needs a judge at {REFERENCE_SAMPLE_RATE} Hz (MuQ); this one runs at "
            f"{model.sample_rate} Hz"
        )
    batch_size = check_positive_int(batch_size, "batch_size")
    clips = to_clips(audio, sample_rate, REFERENCE_SAMPLE_RATE)
    prompts = check_prompts(prompts, len(clips.waves), name="prompts")
    rows: list[dict[str, float]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                waves = torch.stack([crop_or_pad(w) for w in clips.waves[start : start + batch_size]])
                frames = model.audio_encoder(waves.to(model.device)).frames
                text = model.text_encoder.encode(prompts[start : start + batch_size], model.device)
                mi, ta = reference_heads(model.heads, frames, text)
                rows += [{"mi": m, "ta": t} for m, t in zip(mi.tolist(), ta.tolist())]
    finally:
        model.train(was_training)
    return rows


def crop_or_pad(wave: torch.Tensor, samples: int = REFERENCE_SAMPLES) -> torch.Tensor:
    """A mono clip [T] -> its first ``samples`` samples, zero-padded at the end if shorter: [samples]."""
    return wave[:samples] if wave.shape[0] >= samples else F.pad(wave, (0, samples - wave.shape[0]))


def reference_heads(
    heads: DeRAMOSHeads, frames: torch.Tensor, text: TextTokens
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's head forward: frames [B, N, Da] (no mask) + tokens [B, L, Dt] -> MI, TA [B]."""
    dtype = heads.ta.audio_proj.weight.dtype
    frames, tokens = frames.to(dtype), text.tokens.to(dtype)
    x = frames
    if frames.shape[0] == 1:
        x = _position_table(frames.shape[-1], frames.device)(frames)
    states = heads.mi.encoder(x)
    everywhere = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    mi_logits = heads.mi.head(heads.mi.pool(states, everywhere))
    keys = states if heads.ta_keys == "mi" else frames
    _, _, fused = heads.ta.fuse(keys, None, tokens)
    # the reference keeps the positions where the attention mask is 0: padding only, or all if none
    ta_logits = heads.ta.head(heads.ta.pool(fused, ~text.mask))
    return expected_score(mi_logits, heads.bin_centres), expected_score(ta_logits, heads.bin_centres)


def _position_table(dim: int, device: torch.device) -> SinusoidalPositionalEncoding:
    return SinusoidalPositionalEncoding(dim, POSITION_TABLE_LENGTH).to(device)
