"""The two DeRA-MOS branches on top of frozen encoder outputs (docs/model.md, "Architecture")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import DeRAMOSConfig
from .encoders.base import AudioFrames, TextTokens
from .layers import (
    AttentivePooling,
    BinHead,
    SinusoidalPositionalEncoding,
    expected_score,
    masked_mean,
    pool_tokens,
    score_std,
)


@dataclass
class DeRAMOSOutput:
    """Scores and intermediates for B clips."""

    mi: torch.Tensor  # [B] expected MI in [score_low, score_high]
    ta: torch.Tensor  # [B] expected TA
    mi_logits: torch.Tensor  # [B, n_bins]
    ta_logits: torch.Tensor  # [B, n_bins]
    audio_embedding: torch.Tensor  # [B, D] pre-fusion alignment space (D = ta_dim or the text width)
    text_embedding: torch.Tensor  # [B, D]
    mi_std: torch.Tensor | None = None  # [B] standard deviation of the MI bin distribution (uncertainty)
    ta_std: torch.Tensor | None = None  # [B] standard deviation of the TA bin distribution


class MIBranch(nn.Module):
    """Audio frames -> MI bin logits: [PE] -> transformer layer(s) -> attentive pooling -> MLP.

    The sinusoidal positional encoding is added only with ``cfg.positional_encoding`` (docs/model.md
    says why it is off by default).
    """

    def __init__(self, audio_dim: int, cfg: DeRAMOSConfig):
        super().__init__()
        self.position = (
            SinusoidalPositionalEncoding(audio_dim, cfg.max_frames) if cfg.positional_encoding else None
        )
        layer = nn.TransformerEncoderLayer(
            audio_dim, cfg.mi_heads, cfg.mi_ff_dim, dropout=cfg.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.mi_layers, enable_nested_tensor=False)
        self.pool = AttentivePooling(audio_dim, cfg.attentive_pooling)
        self.head = BinHead(audio_dim, cfg.mi_mlp, cfg.n_bins, cfg.dropout)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, N, Da], mask [B, N] -> (logits [B, n_bins], transformer output [B, N, Da])."""
        x = frames if self.position is None else self.position(frames)
        states = self.encoder(x, src_key_padding_mask=~mask)
        return self.head(self.pool(states, mask)), states


class TABranch(nn.Module):
    """Text tokens attend to audio frames -> TA bin logits; also the alignment embeddings.

    Both modalities are projected to ``D = cfg.ta_dim`` (the text width when None, as in the paper).
    The fused tokens are pooled attentively or by their mean (``cfg.ta_pooling``); the audio
    alignment embedding is an attentive pool of the projected frames, or their mean without
    ``cfg.alignment_pool`` (ASTAR-NTU's model has no such pool).
    """

    def __init__(self, audio_dim: int, text_dim: int, cfg: DeRAMOSConfig, text_pooling: str = "mean"):
        super().__init__()
        dim = cfg.ta_dim or text_dim
        self.residual = cfg.ta_residual
        self.text_pooling = text_pooling
        self.token_pooling = cfg.ta_pooling
        self.audio_proj = nn.Linear(audio_dim, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        self.cross_attention = nn.MultiheadAttention(dim, cfg.ta_heads, dropout=cfg.dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.pool = AttentivePooling(dim, cfg.attentive_pooling)
        self.head = BinHead(dim, cfg.ta_mlp, cfg.n_bins, cfg.dropout)
        self.audio_pool = AttentivePooling(dim, cfg.attentive_pooling) if cfg.alignment_pool else None

    def fuse(
        self, keys: torch.Tensor, key_mask: torch.Tensor | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """keys [B, N, Da] (None mask: all real), tokens [B, L, Dt] ->
        (projected audio [B, N, D], projected text [B, L, D], normalised fused tokens [B, L, D])."""
        audio = self.audio_proj(keys)
        text = self.text_proj(tokens)
        padding = None if key_mask is None else ~key_mask
        fused, _ = self.cross_attention(text, audio, audio, key_padding_mask=padding, need_weights=False)
        if self.residual:
            fused = fused + text
        return audio, text, self.norm(fused)

    def forward(
        self, keys: torch.Tensor, key_mask: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """keys [B, N, Da], tokens [B, L, Dt] -> (logits [B, n_bins], audio_emb [B, D], text_emb [B, D])."""
        audio, text, fused = self.fuse(keys, key_mask, tokens)
        if self.token_pooling == "mean":
            pooled = masked_mean(fused, token_mask)
        else:
            pooled = self.pool(fused, token_mask)
        if self.audio_pool is None:
            audio_embedding = masked_mean(audio, key_mask)
        else:
            audio_embedding = self.audio_pool(audio, key_mask)
        return self.head(pooled), audio_embedding, pool_tokens(text, token_mask, self.text_pooling)


class DeRAMOSHeads(nn.Module):
    """Both branches; everything trainable in DeRA-MOS lives here."""

    def __init__(self, audio_dim: int, text_dim: int, cfg: DeRAMOSConfig, text_pooling: str = "mean"):
        super().__init__()
        self.mi = MIBranch(audio_dim, cfg)
        self.ta = TABranch(audio_dim, text_dim, cfg, text_pooling)
        self.ta_keys = cfg.ta_keys
        centres = torch.linspace(cfg.score_low, cfg.score_high, cfg.n_bins)
        self.register_buffer("bin_centres", centres, persistent=False)

    def forward(self, audio: AudioFrames, text: TextTokens) -> DeRAMOSOutput:
        """Padded frames [B, N, Da] + tokens [B, L, Dt] (masks mark real positions) -> scores [B]."""
        dtype = self.ta.audio_proj.weight.dtype
        frames, tokens = audio.frames.to(dtype), text.tokens.to(dtype)
        mi_logits, mi_states = self.mi(frames, audio.mask)
        keys = mi_states if self.ta_keys == "mi" else frames
        ta_logits, audio_emb, text_emb = self.ta(keys, audio.mask, tokens, text.mask)
        return DeRAMOSOutput(
            mi=expected_score(mi_logits, self.bin_centres),
            ta=expected_score(ta_logits, self.bin_centres),
            mi_logits=mi_logits,
            ta_logits=ta_logits,
            audio_embedding=audio_emb,
            text_embedding=text_emb,
            mi_std=score_std(mi_logits, self.bin_centres),
            ta_std=score_std(ta_logits, self.bin_centres),
        )
