"""RoBERTa text encoder (transformers), frozen; token states [B, L, 768] for roberta-base."""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel

from ..config import TextEncoderConfig
from .base import TextEncoder, TextTokens
from .loading import ROBERTA_HUB_ID, load_backbone
from .tokenizer import BYTE_VOCAB_SIZE, byte_level_tokenizer


class RobertaEncoder(TextEncoder):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        if config.name_or_path is not None:
            self.backbone = load_backbone(
                config.name_or_path, AutoModel.from_pretrained, "RoBERTa text encoder", hub_id=ROBERTA_HUB_ID
            )
            self.tokenizer = load_backbone(
                config.name_or_path, AutoTokenizer.from_pretrained, "RoBERTa tokenizer", hub_id=ROBERTA_HUB_ID
            )
        else:
            cfg = {"vocab_size": BYTE_VOCAB_SIZE, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
            cfg.update(config.backbone)
            self.backbone = RobertaModel(RobertaConfig(**cfg), add_pooling_layer=False)
            self.tokenizer = byte_level_tokenizer(config.max_tokens)
        self.dim = self.backbone.config.hidden_size
        self.max_tokens = min(config.max_tokens, self.backbone.config.max_position_embeddings - 2)
        self.freeze()

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextTokens:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return TextTokens(out.last_hidden_state, attention_mask.bool())
