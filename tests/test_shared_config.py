"""The pieces the trainers and commands share: the config base, the options table, JSON lines."""

from __future__ import annotations

import dataclasses

import pytest

from deramos_reward.cli import build_parser
from deramos_reward.cli.dpo import _config as dpo_config_of
from deramos_reward.cli.options import CONFIG_OPTIONS, CommandError, config_options
from deramos_reward.cli.rl import build_config as rl_config_of
from deramos_reward.data.synthetic import check_corpus_args, split_names
from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
from deramos_reward.integrations.training.common.config import TRL_TRAINING_FIELDS, AdapterTrainingConfig
from deramos_reward.integrations.training.dpo.config import MusicDPOConfig
from deramos_reward.integrations.training.rl.config import MusicRLConfig
from deramos_reward.jsonl import json_object
from deramos_reward.training.config import TrainConfig

CONFIGS = (MusicDPOConfig, MusicRLConfig, MusicBackpropConfig)
RL = ["rl", "--backend", "transformers", "--musicgen", "tiny", "--judge", "j", "--out", "run"]
DPO = ["dpo", "--backend", "transformers", "--musicgen", "tiny", "--pairs", "p", "--out", "a"]


@pytest.mark.parametrize("config_type", CONFIGS)
def test_trainer_configs_share_the_base_fields_and_round_trip(config_type):
    base = {f.name for f in dataclasses.fields(AdapterTrainingConfig)}
    assert base <= {f.name for f in dataclasses.fields(config_type)}
    assert set(TRL_TRAINING_FIELDS) <= base
    config = config_type(learning_rate=3e-4, lora_r=4, seed=7, output_dir="run")
    assert config_type.from_json(config.to_json()) == config
    assert config_type.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("config_type", CONFIGS)
@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("learning_rate", 0.0, ValueError),
        ("learning_rate", "1e-4", TypeError),
        ("lora_dropout", 1.0, ValueError),
        ("lr_scheduler_type", "step", ValueError),
        ("disable_dropout", 1, TypeError),
        ("seed", -1, ValueError),
        ("lora_target_modules", 3, TypeError),
    ],
)
def test_base_fields_are_checked_once_with_the_class_and_field_named(config_type, field, value, error):
    with pytest.raises(error, match=rf"^{config_type.__name__}\.{field} must be"):
        config_type(**{field: value})


def test_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown MusicBackpropConfig fields \['nope'\]"):
        MusicBackpropConfig.from_dict({"nope": 1, "seed": 1})
    with pytest.raises(TypeError, match="from a dict"):
        MusicDPOConfig.from_dict([("seed", 1)])


def test_every_option_names_a_field_of_a_command_config():
    fields = {f.name for c in (*CONFIGS, TrainConfig) for f in dataclasses.fields(c)}
    assert set(CONFIG_OPTIONS) <= fields
    flags = [flag for flag, _ in CONFIG_OPTIONS.values()]
    for config_type in (*CONFIGS, TrainConfig):  # one field per flag within a command
        own = [CONFIG_OPTIONS[f][0] for f in config_options(config_type)]
        assert len(own) == len(set(own)), config_type
    assert all(flag.startswith("--") for flag in flags)


def test_command_options_are_typed_and_defaulted_by_the_config_class(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["rl", "--help"])
    rl_help = " ".join(capsys.readouterr().out.split())
    assert "learning rate (default: 0.0001)" in rl_help and "(default: 0.04)" in rl_help
    assert "--lr LR " in rl_help and "--grad-accum GRAD_ACCUM " in rl_help  # metavars name the flags
    assert "(backprop: default 2) (default: 8)" in rl_help
    args = parser.parse_args([*RL, "--lr", "0.01", "--num-generations", "4", "--grad-accum", "2"])
    config = rl_config_of(args)
    assert (config.learning_rate, config.num_generations, config.gradient_accumulation_steps) == (0.01, 4, 2)
    assert config.beta == MusicRLConfig().beta  # not given: the class's default
    args = parser.parse_args([*DPO, "--batch-size", "4", "--loss-type", "ipo", "--max-steps", "3"])
    config = dpo_config_of(args)
    assert (config.per_device_train_batch_size, config.per_device_eval_batch_size) == (4, 4)
    assert (config.loss_type, config.max_steps, config.learning_rate) == (
        "ipo",
        3,
        MusicDPOConfig().learning_rate,
    )
    with pytest.raises(CommandError, match="loss_type must be one of"):
        dpo_config_of(parser.parse_args([*DPO, "--loss-type", "hinge"]))
    with pytest.raises(SystemExit):  # argparse types the option as the field: an int
        parser.parse_args([*RL, "--num-generations", "2.5"])


def test_json_object_names_the_place_and_the_problem():
    assert json_object('{"a": 1}', "f.jsonl:1") == {"a": 1}
    with pytest.raises(ValueError, match=r"^f.jsonl:3: not valid JSON \(.* at column \d+\); fix it$"):
        json_object('{"a": ', "f.jsonl:3", hint="; fix it")
    with pytest.raises(ValueError, match=r"^f.jsonl:4: expected a JSON object, got list$"):
        json_object("[1, 2]", "f.jsonl:4")


def test_corpus_split_names_follow_the_fractions_and_the_checks_cover_raters():
    import numpy as np

    names = split_names(20, (0.7, 0.15, 0.15), np.random.default_rng(0))
    assert sorted(names) == sorted(["train"] * 14 + ["dev"] * 3 + ["test"] * 3)
    assert split_names(20, (0.7, 0.15, 0.15), np.random.default_rng(0)) == names
    assert split_names(3, (0.9, 0.05, 0.05), np.random.default_rng(1)).count("dev") == 1  # at least one
    with pytest.raises(ValueError, match="raters"):
        check_corpus_args(2, 4, 1, 1.0, 16_000, (0.7, 0.15, 0.15), 0, raters=0)
    with pytest.raises(ValueError, match="seconds must be between 1 and 60"):
        check_corpus_args(2, 4, 1, 0.5, 16_000, (0.7, 0.15, 0.15), 0, raters=3, min_seconds=1.0)
