"""Encode each distinct prompt once and reuse its token states across clips and calls."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .encoders.base import TextEncoder, TextTokens


class PromptCache:
    """Token states per prompt, kept unpadded ([L_i, D]) so any batch can be assembled from them.

    The text encoder is frozen, so a prompt's states never change; ``max_items`` bounds memory
    (least recently used prompts are dropped first).
    """

    def __init__(self, text_encoder: TextEncoder, max_items: int = 4096):
        self.text_encoder = text_encoder
        self.max_items = max_items
        self._states: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoded_count = 0  # how many prompts were run through the encoder (for tests/benchmarks)

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()

    def get(self, prompts: Sequence[str], device: torch.device | str | None = None) -> TextTokens:
        """Prompts (repeats allowed) -> padded TextTokens [len(prompts), L_max, D].

        The prompts are taken as given: the entry points that call this (``dr.score``,
        ``MusicReward``, the CLI) have checked them already.
        """
        prompts = list(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._states]
        if missing:
            with torch.no_grad():
                tokens = self.text_encoder.encode(missing, device)
            for i, p in enumerate(missing):
                self._states[p] = tokens.tokens[i, tokens.mask[i]].detach()
            self.encoded_count += len(missing)
        for p in prompts:
            self._states.move_to_end(p)
        rows = [self._states[p] for p in prompts]
        while len(self._states) > self.max_items:
            self._states.popitem(last=False)
        lengths = torch.tensor([r.shape[0] for r in rows])
        padded = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
        return TextTokens(padded.to(device) if device is not None else padded, mask.to(padded.device))
