"""DPO for MusicGen with a LoRA adapter, from preference pairs scored by DeRA-MOS::

    from deramos_reward.integrations.dpo import MusicDPOConfig, MusicDPOTrainer, musicgen_pairs, load_adapter

The parts live in :mod:`deramos_reward.integrations.training.dpo` (loss, pairs, config, trainer) and
:mod:`deramos_reward.integrations.training.common` (LoRA, loading an adapter); they are re-exported here.
"""

from __future__ import annotations

from deramos_reward.integrations.training.common.lora import default_lora_config, load_adapter
from deramos_reward.integrations.training.dpo.config import TRL_SHARED_FIELDS, MusicDPOConfig
from deramos_reward.integrations.training.dpo.loss import DPO_LOSS_TYPES, DPOLoss, dpo_loss
from deramos_reward.integrations.training.dpo.pairs import (
    PAIR_COLUMNS,
    build_pairs,
    collate_pairs,
    generate_pairs,
    load_pairs,
    musicgen_pairs,
    pairs_from_candidates,
    save_pairs,
    select_pairs,
)
from deramos_reward.integrations.training.dpo.trainer import MusicDPOTrainer

__all__ = [
    "DPO_LOSS_TYPES",
    "PAIR_COLUMNS",
    "TRL_SHARED_FIELDS",
    "DPOLoss",
    "MusicDPOConfig",
    "MusicDPOTrainer",
    "build_pairs",
    "collate_pairs",
    "default_lora_config",
    "dpo_loss",
    "generate_pairs",
    "load_adapter",
    "load_pairs",
    "musicgen_pairs",
    "pairs_from_candidates",
    "save_pairs",
    "select_pairs",
]
