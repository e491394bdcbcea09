"""DeRA-MOS: frozen encoders + the MI/TA heads, with windowing of long clips."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .checkpoint import check_state, read_checkpoint, resolve_checkpoint, save_checkpoint
from .config import DeRAMOSConfig
from .encoders import AudioEncoder, TextEncoder, TextTokens, build_audio_encoder, build_text_encoder
from .frontend import plan_windows
from .heads import DeRAMOSHeads, DeRAMOSOutput
from .validation import check_clips, check_positive_int, check_prompts
from .windowing import combine_windows, concat_outputs, encode_windows


class DeRAMOS(nn.Module):
    """Predicts MI and TA (1-5) for audio at ``config.sample_rate`` and a text prompt per clip.

    ``window_batch_size`` bounds how many windows go through the audio encoder at once.
    """

    def __init__(self, config: DeRAMOSConfig | None = None, window_batch_size: int = 16):
        super().__init__()
        config = config or DeRAMOSConfig()
        config.validate()
        self.config = config
        self.window_batch_size = check_positive_int(window_batch_size, "window_batch_size")
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
        return self.text_encoder.encode(unique, self.device), [row[t] for t in texts]

    # ---- audio ------------------------------------------------------------------------------
    def forward_clips(
        self,
        waves: Sequence[torch.Tensor],
        texts: Sequence[str] | TextTokens,
        on_progress: Callable[[float], None] | None = None,
    ) -> DeRAMOSOutput:
        """Mono clips of any lengths (each [T_i] at ``sample_rate``) -> scores [B].

        The clips are taken as they are: they come from the front-end (``frontend.to_clips``)
        or from ``forward``, which check them (non-empty, finite). Clips longer than the window
        are scored in overlapping windows whose outputs are combined by a length-weighted mean
        (of scores, bin probabilities and embeddings): see ``windowing``.
        ``on_progress(samples)`` is called after each encoder pass with its windows' share of the
        clips' samples (overlapping windows share their clip's length), so the calls add up to the
        total number of samples: a progress bar moves inside a long clip.
        """
        text, text_row = self._text_rows(texts, len(waves))
        windows = plan_windows([int(w.shape[0]) for w in waves], self.window_samples, self.hop_samples)
        passes = []
        for indices, frames in encode_windows(
            self.audio_encoder, waves, windows, self.window_batch_size, self.device
        ):
            rows = text.index([text_row[windows[i].clip] for i in indices])
            passes.append((indices, self.heads(frames, rows)))
            if on_progress is not None:
                on_progress(_share(windows, waves, indices))
        return combine_windows(windows, concat_outputs(passes, len(windows)), len(waves))

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
        check_clips(waves)
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
        """Load a checkpoint folder (or a hub id, downloading only config + safetensors).

        ``dtype`` is the frozen encoders' weight dtype (``torch.bfloat16`` halves their memory);
        the heads and the mel front-end stay float32 (see ``set_encoder_dtype``).
        """
        directory = resolve_checkpoint(path_or_hub_id)
        config, state = read_checkpoint(directory)
        model = cls(config)
        check_state(model._saved_state(), state, f"checkpoint {str(directory)!r}")
        model.load_state_dict(state, strict=False)
        model.eval()
        if device is not None:
            model.to(device=device)
        if dtype is not None:
            model.set_encoder_dtype(dtype)
        return model

    def set_encoder_dtype(self, dtype: torch.dtype) -> DeRAMOS:
        """Store the frozen audio and text encoders' weights in ``dtype``, in place; returns self.

        A half type (``torch.bfloat16``: half the memory, bf16 matrix units without autocast's
        per-call casts) or float32 casts only the two backbones: the mel front-end, the heads and
        the scores stay float32 (the heads cast encoder outputs to their own dtype).
        ``torch.float64`` casts the whole judge (for checks).
        """
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if dtype == torch.float64:
            return self.to(torch.float64)
        self.audio_encoder.backbone.to(dtype)
        self.text_encoder.backbone.to(dtype)
        return self


def _share(windows: list, waves: Sequence[torch.Tensor], indices: Sequence[int]) -> float:
    """Samples of the clips that windows ``indices`` stand for (each window: its share of its clip)."""
    covered: dict[int, int] = {}
    for w in windows:
        covered[w.clip] = covered.get(w.clip, 0) + w.length
    return sum(
        windows[i].length * int(waves[windows[i].clip].shape[0]) / covered[windows[i].clip] for i in indices
    )
