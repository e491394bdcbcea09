"""The public names of deramos_reward.integrations survive the layout by concept: the entry points
re-export what moved, the package's lazy names resolve to the defining modules, and the builders'
modules keep their earlier names."""

from __future__ import annotations

import pytest

import deramos_reward.integrations as integrations
from deramos_reward.integrations import backprop, dpo, rl
from deramos_reward.integrations.musicgen.audiocraft import builders as audiocraft_builders
from deramos_reward.integrations.musicgen.transformers import builders as transformers_builders
from deramos_reward.integrations.training.backprop import trainer as backprop_trainer
from deramos_reward.integrations.training.common import lora
from deramos_reward.integrations.training.dpo import loss, pairs
from deramos_reward.integrations.training.rl import trainer as rl_trainer


def test_entry_points_re_export_the_moved_names():
    assert dpo.musicgen_pairs is pairs.musicgen_pairs and dpo.build_pairs is pairs.build_pairs
    assert dpo.dpo_loss is loss.dpo_loss and dpo.load_adapter is lora.load_adapter
    assert rl.MusicRLTrainer is rl_trainer.MusicRLTrainer
    assert backprop.MusicRewardBackpropTrainer is backprop_trainer.MusicRewardBackpropTrainer


def test_lazy_names_and_the_builders_earlier_module_names():
    assert integrations.MusicRLTrainer is rl_trainer.MusicRLTrainer
    assert integrations.load_adapter is lora.load_adapter
    assert integrations.audiocraft.tiny_musicgen is audiocraft_builders.tiny_musicgen
    assert integrations.transformers_musicgen.tiny_musicgen is transformers_builders.tiny_musicgen
    with pytest.raises(AttributeError, match="tuning"):
        integrations.tuning  # noqa: B018 - the attribute access is the test
