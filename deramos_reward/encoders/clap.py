"""CLAP audio and text towers (transformers ``ClapModel``), frozen, with a torch front-end.

``ClapFeatureExtractor`` works in numpy, so no gradient reaches the waveform through it.
``ClapMelFeatures`` recomputes its deterministic path in torch: pad a clip of at most
``max_length_s`` seconds as the extractor does (``repeatpad`` by default), then a Hann STFT
(n_fft 1024, hop 480, centred, reflect padding), a 64-band mel filter bank (slaney scale and norm
for unfused models, HTK without norm for fused ones) and power-to-dB. Random cropping never
happens here: long audio is windowed upstream, each window is at most the CLAP input length.

HTSAT's last hidden state is ``[B, C, F', N]`` with the time axis already in order
(transformers' HTSAT encoder regroups its Swin grid that way); the audio encoder averages it over the
``F'`` frequency rows and returns ``[B, N, C]`` frames (``N`` = 32 for the HTSAT-base layout,
128 for ``TINY_CLAP_BACKBONE``; 10 s of audio in both).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchaudio
from torch import nn
from transformers import (
    ClapAudioModelWithProjection,
    ClapConfig,
    ClapFeatureExtractor,
    ClapTextModelWithProjection,
)

from ..config import BYTE_VOCAB_SIZE, TINY_CLAP_BACKBONE, AudioEncoderConfig, TextEncoderConfig
from .base import AudioEncoder, AudioFrames, TextEncoder, TextTokens
from .loading import CLAP_HUB_ID, load_backbone, text_tower

# The feature extractor settings of laion/clap-htsat-unfused (its preprocessor_config.json); used
# when the towers are built from a config dict instead of loaded from a folder that has its own.
LAION_CLAP_FEATURES: dict = {
    "feature_size": 64,
    "sampling_rate": 48_000,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "frequency_min": 50,
    "frequency_max": 14_000,
    "top_db": None,
    "truncation": "rand_trunc",
    "padding": "repeatpad",
}

PADDINGS = ("repeatpad", "repeat", "pad")


def clap_config(backbone: dict) -> ClapConfig:
    """A ``ClapConfig`` from a JSON dict (keys ``text_config``, ``audio_config``, ``projection_dim``...)."""
    if not isinstance(backbone, dict):
        raise TypeError(f"the CLAP backbone must be a ClapConfig dict, got {type(backbone).__name__}")
    try:
        return ClapConfig(**backbone)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the CLAP backbone dict is not a valid ClapConfig: {err}") from err


def _check_lengths(
    lengths: torch.Tensor | Sequence[int] | None, batch: int, total: int, device
) -> torch.Tensor:
    """lengths [B] ints in [1, total] (None -> all ``total``) as a long tensor on ``device``."""
    if lengths is None:
        return torch.full((batch,), total, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must have shape [{batch}] (one per clip), got {list(lengths.shape)}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integer sample counts, got dtype {lengths.dtype}")
    lengths = lengths.long()
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > total):
        raise ValueError(f"lengths must lie in [1, {total}] (the wave's length), got {lengths.tolist()}")
    return lengths


class ClapMelFeatures(nn.Module):
    """Differentiable, deterministic torch version of ``ClapFeatureExtractor`` for short clips.

    Args:
        extractor: the CLAP feature extractor whose settings are copied (sample rate, n_fft, hop,
            mels, f_min/f_max, max_length_s, padding). Like the extractor, ``top_db`` is not
            applied (it stores the value but never passes it to its dB conversion).
        fusion: True for fused CLAP models: HTK mel filters without norm and 4 stacked copies of
            the mel (the extractor's ``fusion`` path for clips no longer than ``max_length_s``);
            False: slaney filters with slaney norm, one channel (its ``rand_trunc`` path).
    """

    def __init__(self, extractor: ClapFeatureExtractor, fusion: bool = False):
        super().__init__()
        if extractor.padding not in PADDINGS:
            raise ValueError(
                f"feature extractor padding must be one of {PADDINGS}, got {extractor.padding!r}"
            )
        self.sample_rate = int(extractor.sampling_rate)
        self.clip_samples = int(extractor.max_length_s * extractor.sampling_rate)
        self.hop = int(extractor.hop_length)
        self.padding = extractor.padding
        self.channels = 4 if fusion else 1
        self.n_fft = int(extractor.fft_window_size)
        scale, norm = ("htk", None) if fusion else ("slaney", "slaney")
        fb = torchaudio.functional.melscale_fbanks(
            n_freqs=self.n_fft // 2 + 1,
            f_min=float(extractor.frequency_min),
            f_max=float(extractor.frequency_max),
            n_mels=int(extractor.feature_size),
            sample_rate=self.sample_rate,
            norm=norm,
            mel_scale=scale,
        )
        # derived from the extractor's settings, not learned: kept out of the state dict
        self.register_buffer("fb", fb.double(), persistent=False)  # [n_fft // 2 + 1, n_mels]
        self.register_buffer("window", torch.hann_window(self.n_fft, dtype=torch.float64), persistent=False)

    @property
    def num_mel_frames(self) -> int:
        """STFT frames of one padded clip: 1 + clip_samples // hop (1001 for 10 s at 48 kHz)."""
        return 1 + self.clip_samples // self.hop

    def pad(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wave [B, T], lengths [B] -> [B, clip_samples]: row i's first lengths[i] samples padded.

        ``repeatpad``: the clip repeated floor(M / L) times, then zeros; ``repeat``: repeated and
        cut at M; ``pad``: zeros. A clip of exactly M samples is kept as it is.
        """
        m = self.clip_samples
        pos = torch.arange(m, device=wave.device)
        src = pos[None, :] % lengths[:, None]  # [B, M]
        if self.padding == "repeatpad":
            keep = pos[None, :] < (m // lengths * lengths)[:, None]
        elif self.padding == "repeat":
            keep = torch.ones_like(src, dtype=torch.bool)
        else:
            keep = pos[None, :] < lengths[:, None]
        return wave.gather(1, src) * keep.to(wave.dtype)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wave [B, T <= clip_samples], lengths [B] -> log-mel [B, channels, num_mel_frames, n_mels] in dB.

        Computed in float64 for float64 input, else in float32 (even if the model was cast to half).
        The steps are transformers' ``spectrogram(..., power=2, mel_filters, log_mel="dB")``:
        |STFT|^2, mel filters, 10 log10(max(x, 1e-10)).
        """
        dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
        x = self.pad(wave.to(dtype), lengths)
        spec = torchaudio.functional.spectrogram(
            x,
            pad=0,
            window=self.window.to(dtype),
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.n_fft,
            power=2.0,
            normalized=False,
            center=True,
            pad_mode="reflect",
            onesided=True,
        )  # [B, n_fft // 2 + 1, frames]
        mel = torch.einsum("bft,fm->btm", spec, self.fb.to(dtype))  # [B, frames, n_mels]
        db = torchaudio.functional.amplitude_to_DB(mel, multiplier=10.0, amin=1e-10, db_multiplier=0.0)
        return db.unsqueeze(1).expand(-1, self.channels, -1, -1)


def _frames_per_clip(audio_config) -> int:
    """Time-ordered frames in HTSAT's last hidden state for one clip (before frequency averaging)."""
    freq_ratio = audio_config.spec_size // audio_config.num_mel_bins
    stride = audio_config.patch_stride
    stride_t = stride if isinstance(stride, int) else stride[1]
    temporal = audio_config.spec_size // (2 ** (len(audio_config.depths) - 1)) // stride_t
    return freq_ratio * temporal


class ClapAudioEncoder(AudioEncoder):
    """CLAP audio tower (HTSAT) frames from 48 kHz mono audio of at most ``max_length_s`` (10 s).

    Every clip is padded to the CLAP input length (``repeatpad`` by default: deterministic,
    from its own samples only) so a clip's frames never depend on the rest of the batch.
    Input wave [B, T] -> frames [B, N, C] with N = ``frames_per_clip`` (32 for HTSAT-base),
    C = the audio hidden size (768 for HTSAT-base). Frames that lie past a clip's real length
    (i.e. cover only padding) are masked: row i keeps ceil(lengths[i] / clip_samples * N).
    """

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        if config.name_or_path is not None:
            self.backbone = load_backbone(
                config.name_or_path,
                ClapAudioModelWithProjection.from_pretrained,
                "CLAP audio encoder",
                hub_id=CLAP_HUB_ID,
            )
            extractor = load_backbone(
                config.name_or_path,
                ClapFeatureExtractor.from_pretrained,
                "CLAP feature extractor",
                hub_id=CLAP_HUB_ID,
            )
        else:
            self.backbone = ClapAudioModelWithProjection(clap_config(config.backbone).audio_config)
            extractor = ClapFeatureExtractor(**LAION_CLAP_FEATURES)
        audio_cfg = self.backbone.config
        if config.layer != -1:
            raise ValueError(
                f"audio_encoder.layer must be -1 for CLAP (only HTSAT's last hidden state is laid out "
                f"in time order), got {config.layer}"
            )
        if extractor.feature_size != audio_cfg.num_mel_bins:
            raise ValueError(
                f"CLAP feature extractor has {extractor.feature_size} mel bins but the audio tower "
                f"expects num_mel_bins={audio_cfg.num_mel_bins}"
            )
        if config.sample_rate != extractor.sampling_rate:
            raise ValueError(
                f"audio_encoder.sample_rate must be {extractor.sampling_rate} for this CLAP model, "
                f"got {config.sample_rate}"
            )
        self.features = ClapMelFeatures(extractor, fusion=bool(audio_cfg.enable_fusion))
        max_frames = audio_cfg.spec_size * (audio_cfg.spec_size // audio_cfg.num_mel_bins)
        if self.features.num_mel_frames > max_frames:
            raise ValueError(
                f"CLAP max_length_s={extractor.max_length_s} gives {self.features.num_mel_frames} mel frames, "
                f"more than the audio tower's input width {max_frames}"
            )
        window = round(config.window_seconds * config.sample_rate)
        if window > self.features.clip_samples:
            raise ValueError(
                f"audio_encoder.window_seconds must be at most {extractor.max_length_s} s for CLAP "
                f"(its input length), got {config.window_seconds}"
            )
        self.sample_rate = int(extractor.sampling_rate)
        self.clip_samples = self.features.clip_samples
        self.fusion = bool(audio_cfg.enable_fusion)
        self.dim = int(audio_cfg.hidden_size)
        self.frames_per_clip = _frames_per_clip(audio_cfg)
        self.min_samples = max(1, min(int(config.min_seconds * self.sample_rate), self.clip_samples))
        self.freeze()

    def compile_backbone(self, **compile_kwargs) -> None:
        """Compile the HTSAT audio tower (``forward`` calls it directly, not the projection wrapper)."""
        self.backbone.audio_model.compile(**compile_kwargs)

    def num_frames(self, num_samples: int) -> int:
        """Real (unmasked) frames for a clip of ``num_samples``: ceil(num_samples / clip_samples * N)."""
        n = self.frames_per_clip
        return max(1, min(n, -(-int(num_samples) * n // self.clip_samples)))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> AudioFrames:
        """wave [B, T] at 48 kHz, T <= clip_samples; lengths [B] or None -> frames [B, N, C], mask [B, N]."""
        if not isinstance(wave, torch.Tensor) or not wave.is_floating_point():
            raise TypeError(f"wave must be a floating torch.Tensor [B, T], got {type(wave).__name__}")
        if wave.dim() != 2:
            raise ValueError(f"wave must have shape [B, T], got {list(wave.shape)}")
        batch, total = wave.shape
        if total < 1:
            raise ValueError("wave must hold at least one sample per clip, got T=0")
        if total > self.clip_samples:
            raise ValueError(
                f"wave has {total} samples but CLAP takes at most {self.clip_samples} "
                f"({self.clip_samples / self.sample_rate:g} s at {self.sample_rate} Hz); window longer audio first"
            )
        lengths = _check_lengths(lengths, batch, total, wave.device)
        param = next(self.backbone.parameters())
        mel = self.features(wave, lengths).to(param.dtype)  # [B, C, frames, n_mels]
        is_longer = torch.zeros(batch, 1, dtype=torch.bool, device=wave.device)
        out = self.backbone.audio_model(input_features=mel, is_longer=is_longer, return_dict=True)
        hidden = out.last_hidden_state  # [B, C, F', N], time-ordered along N
        frames = hidden.mean(dim=2).transpose(1, 2)  # [B, N, C]
        n = frames.shape[1]
        valid = (lengths * n + self.clip_samples - 1) // self.clip_samples
        valid = valid.clamp(min=1, max=n)
        mask = torch.arange(n, device=frames.device)[None, :] < valid[:, None].to(frames.device)
        return AudioFrames(frames, mask)


class ClapTextEncoder(TextEncoder):
    """CLAP text tower (RoBERTa-like) token states [B, L, hidden] (768 for laion CLAP), frozen."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()

        def offline() -> ClapTextModelWithProjection:
            text_cfg = clap_config(config.backbone).text_config
            if text_cfg.vocab_size < BYTE_VOCAB_SIZE:
                raise ValueError(
                    f"text_encoder.backbone text_config.vocab_size must be >= {BYTE_VOCAB_SIZE} for the "
                    f"offline byte-level tokenizer, got {text_cfg.vocab_size}"
                )
            return ClapTextModelWithProjection(text_cfg)

        loader = ClapTextModelWithProjection.from_pretrained
        backbone, tokenizer = text_tower(config, loader, "CLAP", offline, CLAP_HUB_ID)
        self.adopt(backbone, tokenizer, config.max_tokens)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextTokens:
        """input_ids, attention_mask [B, L] -> token states [B, L, hidden], mask [B, L] bool."""
        out = self.backbone.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return TextTokens(out.last_hidden_state, attention_mask.bool())


__all__ = [
    "LAION_CLAP_FEATURES",
    "TINY_CLAP_BACKBONE",
    "ClapAudioEncoder",
    "ClapMelFeatures",
    "ClapTextEncoder",
    "clap_config",
]
