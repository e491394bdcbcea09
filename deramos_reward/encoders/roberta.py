"""RoBERTa text encoder (transformers), frozen; token states [B, L, 768] for roberta-base."""

from __future__ import annotations

from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel

from ..config import TextEncoderConfig
from .hf_text import TransformersTextEncoder
from .loading import load_backbone
from .tokenizer import BYTE_VOCAB_SIZE, byte_level_tokenizer


class RobertaEncoder(TransformersTextEncoder):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        if config.name_or_path is not None:
            self.backbone = load_backbone(
                config.name_or_path, AutoModel.from_pretrained, "RoBERTa text encoder"
            )
            self.tokenizer = load_backbone(
                config.name_or_path, AutoTokenizer.from_pretrained, "RoBERTa tokenizer"
            )
        else:
            cfg = {"vocab_size": BYTE_VOCAB_SIZE, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
            cfg.update(config.backbone)
            self.backbone = RobertaModel(RobertaConfig(**cfg), add_pooling_layer=False)
            self.tokenizer = byte_level_tokenizer(config.max_tokens)
        self.dim = self.backbone.config.hidden_size
        self.max_tokens = min(config.max_tokens, self.backbone.config.max_position_embeddings - 2)
        self.freeze()
