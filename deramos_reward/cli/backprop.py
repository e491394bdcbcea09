"""``deramos rl --method backprop``: reward backpropagation instead of policy-gradient RL.

Each step samples codes from the current policy, runs a teacher-forced pass with gradient, decodes the
samples through the codec with a straight-through estimator (the audio is exactly the sampled audio;
the gradient flows through the softmax of the logits) and ascends the judge's reward, minus ``--beta``
times the KL to the reference (the model with the adapter off). The run folder is laid out as for RL
(``settings.json``, ``checkpoint/``, ``log.jsonl``, ``adapter/`` with ``backprop_config.json``).

This module adds the method's options to ``deramos rl`` and runs it; the options shared with RL keep
their meaning, RL-only options (``--epsilon``, ``--num-iterations``, ``--advantage``, ``--loss-type``,
``--uncertainty-penalty``, ``--diversity-weight``, ``--no-normalize-per-axis``, ``--config``) are refused.
"""

from __future__ import annotations

import argparse
from typing import Any

from .musicgen import policy_sampling
from .options import CommandError, make_config

RL_ONLY = ("epsilon", "num_iterations", "advantage", "loss_type", "uncertainty_penalty", "diversity_weight")


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """``--method`` and the options of reward backpropagation, on the ``deramos rl`` parser."""
    group = p.add_argument_group("reward backpropagation (--method backprop)")
    group.add_argument(
        "--method",
        choices=("rl", "backprop"),
        default="rl",
        help="rl: policy-gradient RL (GRPO/RLOO, default); backprop: backpropagate the judge's gradient "
        "through straight-through decoding (see the README's 'Reward backpropagation')",
    )
    group.add_argument(
        "--truncate-frames",
        type=int,
        default=None,
        metavar="K",
        help="backprop, DRaFT-K: only the last K code frames carry the reward's gradient (default: all)",
    )
    group.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="backprop: recompute the codec's and the judge's activations in backward (less memory, more time)",
    )


def check_method_arguments(args: argparse.Namespace) -> None:
    """CommandError for a backprop option with ``--method rl`` or an RL-only option with ``backprop``."""
    if args.method == "rl":
        used = [flag for flag, on in (("--truncate-frames", args.truncate_frames is not None),
                                      ("--gradient-checkpointing", args.gradient_checkpointing)) if on]  # fmt: skip
        if used:
            raise CommandError(f"{', '.join(used)} only apply to --method backprop")
        return
    used = [f"--{name.replace('_', '-')}" for name in RL_ONLY if getattr(args, name, None) is not None]
    used += ["--no-normalize-per-axis"] if getattr(args, "no_normalize_per_axis", False) else []
    used += ["--config"] if getattr(args, "config", None) else []
    if used:
        raise CommandError(f"{', '.join(used)} only apply to --method rl")


def backprop_config(args: argparse.Namespace) -> Any:
    """The :class:`MusicBackpropConfig` of a ``deramos rl --method backprop`` command line."""
    from ..integrations.training.backprop.config import MusicBackpropConfig

    fixed: dict[str, Any] = {"output_dir": args.out, "truncate_frames": args.truncate_frames}
    fixed["gradient_checkpointing"] = args.gradient_checkpointing
    if args.bf16 is not None:
        fixed["bf16"] = args.bf16
    if args.sampling:
        fixed["generation_kwargs"] = policy_sampling(args)
    return make_config(MusicBackpropConfig, args, **fixed)


def backprop_trainer(args: argparse.Namespace, config: Any, backend: Any, judge: Any, prompts, eval_prompts):
    """The :class:`MusicRewardBackpropTrainer` of a ``deramos rl --method backprop`` command line."""
    import deramos_reward as dr

    from ..integrations.backprop import MusicRewardBackpropTrainer

    weights = judge_weights(args)
    reward = dr.MusicReward(judge, **weights, gradient_checkpointing=config.gradient_checkpointing)
    return MusicRewardBackpropTrainer(backend, reward, prompts, config, eval_prompts=eval_prompts)


def judge_weights(args: argparse.Namespace) -> dict[str, float]:
    """``{"mi_weight", "ta_weight"}`` of the judge's reward, as ``--mi-weight`` / ``--ta-weight`` give them."""
    return {"mi_weight": args.mi_weight, "ta_weight": args.ta_weight}
