"""DeRA-MOS: frozen encoders + the MI/TA heads, with windowing of long clips."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .checkpoint import check_state, read_checkpoint, resolve_checkpoint, save_checkpoint
from .config import DeRAMOSConfig
from .encoders import AudioEncoder, TextEncoder, TextTokens, build_audio_encoder, build_text_encoder
from .frontend import Window, plan_windows
from .heads import DeRAMOSHeads, DeRAMOSOutput
from .validation import check_finite, check_prompts


class DeRAMOS(nn.Module):
    """Predicts MI and TA (1-5) for audio at ``config.sample_rate`` and a text prompt per clip.

    ``window_batch_size`` bounds how many windows go through the audio encoder at once.
    """

    def __init__(self, config: DeRAMOSConfig | None = None, window_batch_size: int = 16):
        super().__init__()
        config = config or DeRAMOSConfig()
        config.validate()
        self.config = config
        self.window_batch_size = window_batch_size
        self.audio_encoder: AudioEncoder = build_audio_encoder(config.audio_encoder)
        self.text_encoder: TextEncoder = build_text_encoder(config.text_encoder)
        self.heads = DeRAMOSHeads(
            self.audio_encoder.dim, self.text_encoder.dim, config, self.text_encoder.pooling
        )
        enc = config.audio_encoder
        self.window_samples = int(round(enc.window_seconds * self.sample_rate))
        self.hop_samples = int(round(enc.hop_seconds * self.sample_rate))

    @property
    def sample_rate(self) -> int:
        return self.audio_encoder.sample_rate

    @property
    def device(self) -> torch.device:
        return self.heads.mi.pool.score.weight.device

    # ---- text -------------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> TextTokens:
        """Distinct prompts -> token states [U, L, Dt] (callers deduplicate)."""
        texts = check_prompts(list(texts), name="texts")
        return self.text_encoder.encode(texts, self.device)

    def _text_rows(self, texts: Sequence[str] | TextTokens, count: int) -> tuple[TextTokens, list[int]]:
        """Token states for the prompts + which row each of the ``count`` clips uses."""
        if isinstance(texts, TextTokens):
            if texts.tokens.shape[0] != count:
                raise ValueError(f"got {count} audio clips but text features for {texts.tokens.shape[0]}")
            return texts, list(range(count))
        texts = check_prompts(texts, count, name="texts")
        unique = list(dict.fromkeys(texts))
        row = {t: i for i, t in enumerate(unique)}
        return self.encode_text(unique), [row[t] for t in texts]

    # ---- audio ------------------------------------------------------------------------------
    def _encode_windows(
        self, waves: Sequence[torch.Tensor], windows: list[Window], text: TextTokens, text_row: list[int]
    ):
        """Run encoder + heads over windows grouped by length (no padding between clips).

        Grouping by exact length keeps a clip's score independent of the rest of the batch:
        MuQ's convolutions would otherwise see other clips' padding.
        """
        groups: dict[int, list[int]] = defaultdict(list)
        for i, w in enumerate(windows):
            groups[w.length].append(i)
        results: list[DeRAMOSOutput | None] = [None] * len(windows)
        min_samples = self.audio_encoder.min_samples
        for length, members in groups.items():
            for start in range(0, len(members), self.window_batch_size):
                chunk = members[start : start + self.window_batch_size]
                segs = torch.stack(
                    [waves[windows[i].clip][windows[i].start : windows[i].stop] for i in chunk]
                )
                if length < min_samples:
                    segs = nn.functional.pad(segs, (0, min_samples - length))
                lengths = torch.full((len(chunk),), length)
                frames = self.audio_encoder(segs.to(self.device), lengths)
                rows = text.index([text_row[windows[i].clip] for i in chunk])
                out = self.heads(frames, rows)
                for j, i in enumerate(chunk):
                    results[i] = DeRAMOSOutput(*(getattr(out, f)[j] for f in _FIELDS))
        return results

    def forward_clips(
        self, waves: Sequence[torch.Tensor], texts: Sequence[str] | TextTokens
    ) -> DeRAMOSOutput:
        """Mono clips of any lengths (each [T_i] at ``sample_rate``) -> scores [B].

        Clips longer than the window are scored in overlapping windows whose outputs are combined
        by a length-weighted mean (of scores, bin probabilities and embeddings).
        """
        if len(waves) == 0:
            raise ValueError("audio holds no clips")
        for i, w in enumerate(waves):
            if not isinstance(w, torch.Tensor) or w.dim() != 1:
                raise ValueError(
                    f"audio[{i}] must be a 1-D tensor of samples, got {getattr(w, 'shape', type(w))}"
                )
            if w.shape[0] == 0:
                raise ValueError(f"audio[{i}] is empty (0 samples)")
            check_finite(w, f"audio[{i}]")
        text, text_row = self._text_rows(texts, len(waves))
        windows = plan_windows([int(w.shape[0]) for w in waves], self.window_samples, self.hop_samples)
        per_window = self._encode_windows(waves, windows, text, text_row)
        return _combine(windows, per_window, len(waves))

    def forward(
        self,
        audio: torch.Tensor | Sequence[torch.Tensor],
        texts: Sequence[str] | TextTokens,
        audio_lengths: torch.Tensor | Sequence[int] | None = None,
    ) -> DeRAMOSOutput:
        """audio [B, T] float at ``sample_rate`` (or a list of [T_i]); ``audio_lengths`` [B] trims padding."""
        if isinstance(audio, torch.Tensor):
            if audio.dim() == 1:
                audio = audio.unsqueeze(0)
            if audio.dim() != 2:
                raise ValueError(
                    f"audio must be [B, T] at {self.sample_rate} Hz, got shape {tuple(audio.shape)}"
                )
            if not audio.is_floating_point():
                raise TypeError(f"audio must be a floating tensor, got {audio.dtype}")
            waves = list(audio.unbind(0))
        else:
            waves = list(audio)
        if audio_lengths is not None:
            lengths = [int(n) for n in torch.as_tensor(audio_lengths).tolist()]
            if len(lengths) != len(waves):
                raise ValueError(f"audio_lengths has {len(lengths)} entries for {len(waves)} clips")
            for i, (w, n) in enumerate(zip(waves, lengths)):
                if not 0 < n <= w.shape[-1]:
                    raise ValueError(f"audio_lengths[{i}]={n} must be in [1, {w.shape[-1]}]")
            waves = [w[:n] for w, n in zip(waves, lengths)]
        return self.forward_clips(waves, texts)

    # ---- checkpoints ------------------------------------------------------------------------
    def _saved_state(self) -> dict[str, torch.Tensor]:
        """Head weights, plus backbone weights only for backbones built from a config."""
        skip = []
        if self.config.audio_encoder.name_or_path is not None:
            skip.append("audio_encoder.")
        if self.config.text_encoder.name_or_path is not None:
            skip.append("text_encoder.")
        return {k: v for k, v in self.state_dict().items() if not k.startswith(tuple(skip))}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (referenced backbones are not copied)."""
        return save_checkpoint(directory, self.config, self._saved_state())

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> DeRAMOS:
        """Load a checkpoint folder (or a hub id, downloading only config + safetensors)."""
        directory = resolve_checkpoint(path_or_hub_id)
        config, state = read_checkpoint(directory)
        model = cls(config)
        check_state(model._saved_state(), state, f"checkpoint {str(directory)!r}")
        model.load_state_dict(state, strict=False)
        model.eval()
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model


_FIELDS = ("mi", "ta", "mi_logits", "ta_logits", "audio_embedding", "text_embedding")


def _combine(windows: list[Window], per_window: list[DeRAMOSOutput], n_clips: int) -> DeRAMOSOutput:
    """Length-weighted mean of window outputs per clip; single-window clips pass through unchanged."""
    by_clip: list[list[int]] = [[] for _ in range(n_clips)]
    for i, w in enumerate(windows):
        by_clip[w.clip].append(i)
    fields: dict[str, list[torch.Tensor]] = {f: [] for f in _FIELDS}
    for members in by_clip:
        if len(members) == 1:
            out = per_window[members[0]]
            for f in _FIELDS:
                fields[f].append(getattr(out, f))
            continue
        lengths = torch.tensor([windows[i].length for i in members], dtype=torch.float64)
        weights = (lengths / lengths.sum()).to(per_window[members[0]].mi.dtype)
        weights = weights.to(per_window[members[0]].mi.device)
        for f in ("mi", "ta", "audio_embedding", "text_embedding"):
            stacked = torch.stack([getattr(per_window[i], f) for i in members])
            w = weights.to(stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
            fields[f].append((w * stacked).sum(0))  # elementwise: autocast keeps the dtype
        for f in ("mi_logits", "ta_logits"):
            probs = torch.stack([torch.softmax(getattr(per_window[i], f).float(), -1) for i in members])
            fields[f].append(torch.log((weights.to(probs.dtype)[:, None] * probs).sum(0)))
    return DeRAMOSOutput(**{f: torch.stack(v) for f, v in fields.items()})
