"""Faster forms of two MuQ pieces that compute the same function (differences are float rounding).

- :func:`subsample`: MuQ's ``Conv2dSubsampling`` with each eval-mode BatchNorm folded into the
  convolution before it (``w * g / sqrt(var + eps)``, ``(b - mean) * g / sqrt(var + eps) + beta``),
  in-place ReLUs and residual adds, and the final projection as one 2-D matrix product instead of a
  batched one over a permuted view. The folded weights are recomputed on every call (a few MFLOPs),
  so the backbone's parameters and state dict are never changed.
- :func:`sdpa_self_attention`: transformers' ``Wav2Vec2ConformerSelfAttention.forward`` (rotary or
  no position embeddings) with ``q k^T``, the mask, softmax and ``p v`` done by
  ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, no ``[B, H, N, N]``
  probability tensor kept for backward on GPUs).

Both fall back to the original modules whenever their structure is not the one they were written for.
"""

from __future__ import annotations

import inspect
import types

import torch
import torch.nn.functional as F
from torch import nn

_ATTENTION_PARAMS = ("hidden_states", "attention_mask", "relative_position_embeddings", "output_attentions")


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``bn(conv(x))`` as one convolution, computed in float32 (float64 stays)."""
    work = torch.promote_types(conv.weight.dtype, torch.float32)
    scale = bn.weight.to(work) * torch.rsqrt(bn.running_var.to(work) + bn.eps)
    weight = conv.weight.to(work) * scale[:, None, None, None]
    bias = conv.bias.to(work) if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.to(work)) * scale + bn.bias.to(work)
    return weight.to(dtype), bias.to(dtype)


def _conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    weight, bias = _folded(conv, bn, conv.weight.dtype)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _residual_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MuQ's ``Res2dModule``: relu(bn2(conv2(relu(bn1(conv1(x))))) + [bn3(conv3(x)) or x])."""
    out = _conv_bn(x, block.conv1, block.bn1).relu_()
    out = _conv_bn(out, block.conv2, block.bn2)
    skip = _conv_bn(x, block.conv3, block.bn3) if block.diff else x
    return out.add_(skip).relu_()


def can_fold(subsampling: nn.Module) -> bool:
    """True when ``subsampling`` is MuQ's ``Conv2dSubsampling`` layout in eval mode (foldable)."""
    blocks = getattr(subsampling, "conv", None)
    if not isinstance(blocks, nn.Sequential) or not isinstance(
        getattr(subsampling, "linear", None), nn.Linear
    ):
        return False
    for block in blocks:
        names = ("conv1", "bn1", "conv2", "bn2") + (("conv3", "bn3") if getattr(block, "diff", None) else ())
        if not isinstance(getattr(block, "diff", None), bool):
            return False
        for name in names:
            m = getattr(block, name, None)
            kind = nn.Conv2d if name.startswith("conv") else nn.BatchNorm2d
            if not isinstance(m, kind) or (kind is nn.BatchNorm2d and (m.training or m.running_var is None)):
                return False
    return True


def subsample(subsampling: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MuQ's conv subsampling with folded BatchNorm: mel [B, n_mels, T] -> [B, T', encoder_dim].

    Same output as ``subsampling(x)`` up to float rounding (eval mode; see :func:`can_fold`).
    """
    x = x.unsqueeze(1)  # [B, 1, F, T]
    for block in subsampling.conv:
        x = _residual_block(block, x)
    b, c, f, t = x.shape
    x = x.permute(0, 3, 1, 2).reshape(b * t, c * f)  # "b c f t -> (b t) (c f)"
    linear = subsampling.linear
    return F.linear(x, linear.weight, linear.bias).reshape(b, t, -1)


def sdpa_self_attention(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    relative_position_embeddings: torch.Tensor | None = None,
    output_attentions: bool = False,
):
    """``Wav2Vec2ConformerSelfAttention.forward`` through SDPA: hidden [B, N, D] -> ([B, N, D], None).

    Bound to an attention module by :func:`use_sdpa`. Asked for attention probabilities, it runs
    the module's own forward (SDPA does not return them).
    """
    if output_attentions:
        return type(self).forward(
            self, hidden_states, attention_mask, relative_position_embeddings, output_attentions
        )
    batch, length, _ = hidden_states.shape
    query_key = hidden_states
    if self.position_embeddings_type == "rotary":
        if relative_position_embeddings is None:
            raise ValueError("rotary self-attention needs relative_position_embeddings")
        query_key = self._apply_rotary_embedding(hidden_states, relative_position_embeddings)

    def heads(x: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, H, N, D / H]
        return x.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)

    q, k, v = (
        heads(self.linear_q(query_key)),
        heads(self.linear_k(query_key)),
        heads(self.linear_v(hidden_states)),
    )
    mask = attention_mask
    if mask is not None and mask.is_floating_point():
        mask = mask.to(q.dtype)  # additive mask, as the original adds it to the scores
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0
    )
    out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)
    return self.linear_out(out), None


def sdpa_compatible(attn: nn.Module) -> bool:
    """True for a transformers ``Wav2Vec2ConformerSelfAttention`` with rotary or no position embeddings."""
    if type(attn).__name__ != "Wav2Vec2ConformerSelfAttention":
        return False
    if getattr(attn, "position_embeddings_type", "relative") not in ("rotary", None):
        return False
    needed = ("linear_q", "linear_k", "linear_v", "linear_out", "num_heads", "head_size", "dropout")
    if not all(hasattr(attn, name) for name in needed):
        return False
    if attn.position_embeddings_type == "rotary" and not hasattr(attn, "_apply_rotary_embedding"):
        return False
    params = tuple(inspect.signature(type(attn).forward).parameters)[1:]
    return params[: len(_ATTENTION_PARAMS)] == _ATTENTION_PARAMS


def use_sdpa(attn: nn.Module, enabled: bool) -> None:
    """Route ``attn`` (see :func:`sdpa_compatible`) through SDPA, or back to its own forward."""
    if enabled:
        attn.forward = types.MethodType(sdpa_self_attention, attn)
    elif "forward" in attn.__dict__:
        del attn.forward
