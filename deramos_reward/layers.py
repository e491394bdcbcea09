"""Building blocks of the DeRA-MOS heads, one idea per class."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine table of Vaswani et al.: x [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n > self.table.shape[0]:
            raise ValueError(
                f"sequence of {n} frames exceeds the positional table ({self.table.shape[0]}); raise max_frames"
            )
        return x + self.table[:n].to(x.dtype)


class AttentivePooling(nn.Module):
    """Softmax-weighted sum over positions, padding excluded: x [B, N, D], mask [B, N] (True = keep) -> [B, D].

    ``formula="linear"`` scores each position as the authors' code does, ``w·x_t + b`` (one
    ``Linear(D, 1)``); ``"tanh"`` scores it ``w·tanh(W x_t + c) + b``, as this package did before it
    followed the reference. A row with no kept position gets uniform weights (a plain mean), which
    is what the reference's ``-1e9`` fill gives.
    """

    def __init__(self, dim: int, formula: str = "linear"):
        super().__init__()
        if formula not in ("linear", "tanh"):
            raise ValueError(f"formula must be 'linear' or 'tanh', got {formula!r}")
        self.proj = nn.Linear(dim, dim) if formula == "tanh" else None
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = x if self.proj is None else torch.tanh(self.proj(x))
        logits = self.score(hidden).squeeze(-1)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1)
        return torch.einsum("bn,bnd->bd", weights, x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over positions where ``mask`` is True: x [B, N, D], mask [B, N] -> [B, D]."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


POOLINGS = ("mean", "cls", "max", "last")


def pool_tokens(x: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Sentence embedding from token states: x [B, L, D], mask [B, L] (True = real) -> [B, D].

    ``mode``: ``"mean"`` (masked mean), ``"cls"`` (first token), ``"max"`` (masked max over
    positions) or ``"last"`` (last real token), the poolings sentence-transformers models declare.
    """
    if mode == "mean":
        return masked_mean(x, mask)
    if mode == "cls":
        return x[:, 0]
    if mode == "max":
        return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)
    if mode == "last":
        last = (mask.long().sum(1) - 1).clamp_min(0)
        return x[torch.arange(x.shape[0], device=x.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")


class BinHead(nn.Module):
    """MLP to ``n_bins`` logits: [B, D] -> [B, n_bins]; hidden layers ReLU + dropout."""

    def __init__(self, dim: int, hidden: list[int], n_bins: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(dim, width), nn.ReLU(), nn.Dropout(dropout)]
            dim = width
        layers.append(nn.Linear(dim, n_bins))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def expected_score(logits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Expectation of the bin centres under softmax(logits): [B, n_bins] -> [B].

    Computed in float32 (float64 for float64 logits) with an elementwise product, so autocast
    never rounds the score to bf16.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return (torch.softmax(logits.to(dtype), dim=-1) * centres.to(dtype)).sum(-1)


def score_std(logits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the bin centres under softmax(logits): [B, n_bins] -> [B].

    The spread of the predicted score distribution (the judge's own uncertainty), in score units.
    Float32 or wider like ``expected_score``; the variance is floored at the dtype's smallest normal
    number before the square root so a one-hot distribution keeps a finite gradient.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    probs = torch.softmax(logits.to(dtype), dim=-1)
    centres = centres.to(dtype)
    mean = (probs * centres).sum(-1, keepdim=True)
    variance = (probs * (centres - mean).pow(2)).sum(-1)
    return variance.clamp_min(torch.finfo(dtype).tiny).sqrt()
