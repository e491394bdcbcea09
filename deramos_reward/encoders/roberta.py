"""RoBERTa text encoder (transformers), frozen; token states [B, L, 768] for roberta-base."""

from __future__ import annotations

import torch
from transformers import AutoModel, RobertaConfig, RobertaModel

from ..config import BYTE_TOKEN_IDS, BYTE_VOCAB_SIZE, TextEncoderConfig
from .base import TextEncoder, TextTokens
from .loading import ROBERTA_HUB_ID, text_tower


class RobertaEncoder(TextEncoder):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()

        def offline() -> RobertaModel:
            cfg = {"vocab_size": BYTE_VOCAB_SIZE, **BYTE_TOKEN_IDS, **config.backbone}
            return RobertaModel(RobertaConfig(**cfg), add_pooling_layer=False)

        backbone, tokenizer = text_tower(
            config, AutoModel.from_pretrained, "RoBERTa", offline, ROBERTA_HUB_ID
        )
        self.adopt(backbone, tokenizer, config.max_tokens)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextTokens:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return TextTokens(out.last_hidden_state, attention_mask.bool())
