"""Any Hugging Face text encoder (BERT, RoBERTa, MiniLM, ...) through ``AutoModel``, frozen.

``kind="hf"``. With ``name_or_path`` (a hub id or a local folder, e.g. a sentence-transformers
model) the weights, config and tokenizer load with ``from_pretrained``; the folder's own pooling
(sentence-transformers' ``modules.json`` -> ``1_Pooling/config.json``) is read into ``pooling``
(``"mean"`` when the folder declares none). With ``backbone`` (a config dict with a ``model_type``,
default ``"bert"``) a random model is built offline with the byte-level tokenizer.
"""

from __future__ import annotations

import json
import os

import torch
from transformers import AutoConfig, AutoModel

from ..config import BYTE_TOKEN_IDS, BYTE_VOCAB_SIZE, TextEncoderConfig
from .base import TextEncoder, TextTokens
from .loading import resolve_name_or_path, text_tower

# sentence-transformers' Pooling config keys -> our pooling names, in order of preference
_POOLING_KEYS = (
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean"),  # the mean's direction, scaled
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_lasttoken", "last"),
)


def read_pooling(folder: str) -> str:
    """The pooling a sentence-transformers folder declares (``"mean"`` if it declares none).

    Follows ``modules.json`` to the ``sentence_transformers.models.Pooling`` module's folder
    (``1_Pooling`` when there is no ``modules.json``) and reads its ``config.json``. A config that
    enables several modes (a concatenation) is pooled by the first of mean, cls, max, last.
    """
    pooling_dir = os.path.join(folder, "1_Pooling")
    modules = os.path.join(folder, "modules.json")
    if os.path.isfile(modules):
        with open(modules, encoding="utf-8") as f:
            for module in json.load(f):
                if str(module.get("type", "")).endswith("Pooling"):
                    pooling_dir = os.path.join(folder, module.get("path", ""))
    path = os.path.join(pooling_dir, "config.json")
    if not os.path.isfile(path):
        return "mean"
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    for key, mode in _POOLING_KEYS:
        if cfg.get(key):
            return mode
    raise ValueError(f"{path}: no pooling mode this library supports is enabled ({cfg})")


def pooling_of(name_or_path: str) -> str:
    """``read_pooling`` of a local folder, a packaged hub id, or a hub id's files in the hub cache.

    For a hub id the two small pooling files are fetched like the weights are (from the cache when
    ``HF_HUB_OFFLINE`` is set); a model that has none of them pools by the mean.
    """
    folder = resolve_name_or_path(name_or_path)
    if os.path.isdir(folder):
        return read_pooling(folder)
    from transformers.utils import cached_file

    quiet = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
    modules = cached_file(name_or_path, "modules.json", **quiet)
    if modules is None:
        return "mean"
    with open(modules, encoding="utf-8") as f:
        paths = [m.get("path", "") for m in json.load(f) if str(m.get("type", "")).endswith("Pooling")]
    for sub in paths[:1]:
        cached_file(name_or_path, f"{sub}/config.json", **quiet)
    return read_pooling(os.path.dirname(modules))


class HFTextEncoder(TextEncoder):
    """Token states [B, L, hidden_size] of any ``AutoModel`` text encoder."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()

        def offline() -> torch.nn.Module:
            cfg = {"vocab_size": BYTE_VOCAB_SIZE, **BYTE_TOKEN_IDS, **config.backbone}
            model_type = cfg.pop("model_type", "bert")
            return AutoModel.from_config(AutoConfig.for_model(model_type, **cfg))

        backbone, tokenizer = text_tower(config, AutoModel.from_pretrained, "Hugging Face", offline)
        if config.name_or_path is not None:
            self.pooling = pooling_of(config.name_or_path)
        bcfg = backbone.config
        # RoBERTa's positions start after the padding index
        unused = bcfg.pad_token_id + 1 if bcfg.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        self.adopt(backbone, tokenizer, config.max_tokens, unused_positions=unused)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextTokens:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return TextTokens(out.last_hidden_state, attention_mask.bool())
