"""The small interface every backbone wrapper implements.

An audio encoder maps mono waveforms at its own rate to frames; a text encoder maps prompts
to token states. Backbones are frozen: their parameters never require grad and they stay in
eval mode even when the surrounding model is put in train mode. Gradients still flow through
them to the input waveform (the reward needs that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers import pool_tokens


@dataclass
class AudioFrames:
    frames: torch.Tensor  # [B, N, D]
    mask: torch.Tensor  # [B, N] bool, True = real frame


@dataclass
class TextTokens:
    tokens: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L] bool, True = real token

    def index(self, idx: torch.Tensor | list[int]) -> TextTokens:
        """Rows ``idx`` of the batch: [len(idx), L, D]."""
        idx = torch.as_tensor(idx, device=self.tokens.device, dtype=torch.long)
        return TextTokens(self.tokens.index_select(0, idx), self.mask.index_select(0, idx))


def freeze(module: nn.Module) -> nn.Module:
    """Stop ``module`` training, in place: no parameter requires grad, eval mode (no dropout)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class FrozenBackbone(nn.Module):
    """Base for wrappers: freezes ``self.backbone`` and keeps it in eval mode."""

    backbone: nn.Module

    def freeze(self) -> None:
        freeze(self.backbone)

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(mode)
        self.backbone.eval()  # dropout/batch-norm statistics of a frozen backbone never change
        return self


class AudioEncoder(FrozenBackbone):
    sample_rate: int
    dim: int
    min_samples: int

    def num_frames(self, num_samples: int) -> int:
        """Frames the encoder outputs for ``num_samples`` input samples."""
        raise NotImplementedError

    def compile_backbone(self, **compile_kwargs) -> None:
        """``torch.compile`` the backbone's heavy modules in place (``compile_kwargs`` go to it)."""
        self.backbone.compile(**compile_kwargs)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> AudioFrames:
        """wave [B, T] at ``sample_rate`` (all rows length T) -> frames [B, N, D].

        ``lengths`` [B] marks how many samples are real; frames past them are masked.
        """
        raise NotImplementedError


class TextEncoder(FrozenBackbone):
    dim: int
    max_tokens: int
    tokenizer: Any  # a transformers tokenizer
    pooling: str = "mean"  # how the backbone itself pools tokens into a sentence (layers.POOLINGS)

    def adopt(self, backbone: nn.Module, tokenizer: Any, max_tokens: int, unused_positions: int = 2) -> None:
        """Take a transformers tower (``config.hidden_size``, ``config.max_position_embeddings``)
        and its tokenizer; prompts are cut to ``max_tokens`` tokens or what the positions allow.

        ``unused_positions``: positions the tower never gives a token (RoBERTa-style towers start
        after the padding index, so 2; BERT-style towers 0).
        """
        self.backbone, self.tokenizer = backbone, tokenizer
        self.dim = int(backbone.config.hidden_size)
        positions = getattr(backbone.config, "max_position_embeddings", None) or max_tokens + unused_positions
        self.max_tokens = min(max_tokens, positions - unused_positions)
        self.freeze()

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """texts -> input_ids, attention_mask [B, L] (padded to the longest, at most ``max_tokens``)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")  # a str would be split into characters
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextTokens:
        """input_ids, attention_mask [B, L] -> token states [B, L, D]."""
        raise NotImplementedError

    def encode(self, texts: list[str], device: torch.device | str | None = None) -> TextTokens:
        batch = self.tokenize(texts, device)
        return self(batch["input_ids"], batch["attention_mask"])

    def embed(self, texts: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Sentence embeddings [B, D]: the token states pooled the backbone's own way (``pooling``)."""
        out = self.encode(texts, device)
        return pool_tokens(out.tokens, out.mask, self.pooling)
