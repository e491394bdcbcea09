"""``deramos backprop``: fine-tune a LoRA adapter on MusicGen by backpropagating the DeRA-MOS reward.

Each step samples codes from the current policy, runs a teacher-forced pass with gradient, decodes the
samples through the codec with a straight-through estimator (the audio is exactly the sampled audio;
the gradient flows through the softmax of the logits) and ascends the judge's reward, minus ``--beta``
times the KL to the reference (the model with the adapter off).

OUT is a run folder: ``settings.json``, ``log.jsonl`` (one row per logged step), ``checkpoint/`` (every
``--save-steps`` and at the end) and ``adapter/`` (the final adapter, peft format; load it with
``deramos_reward.integrations.dpo.load_adapter(model, OUT/adapter)``). Running the same command again
resumes an interrupted run; different settings are refused. A JSON summary is printed on stdout.

Runs under ``accelerate launch`` for several GPUs or processes::

    accelerate launch -m deramos_reward.cli backprop --backend transformers --musicgen ... \\
        --reward JUDGE --prompts prompts.txt --out RUN

``--musicgen tiny`` builds the tiny random MusicGen of the chosen backend offline (tests and demos).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import CommandError
from .generate import read_prompts
from .musicgen import add_musicgen_arguments, add_reward_arguments, load_backend, parse_sampling


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="fine-tune a LoRA adapter on MusicGen with the judge's gradient (reward backpropagation)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_musicgen_arguments(p)
    add_reward_arguments(p)
    add_backprop_arguments(p)
    p.set_defaults(run=run)


def add_backprop_arguments(p: argparse.ArgumentParser) -> None:
    """Prompts, output folder and the trainer's options (:class:`MusicBackpropConfig` fields)."""
    p.add_argument("--prompt", action="append", default=[], help="a training prompt (repeat for several)")
    p.add_argument("--prompts", metavar="FILE", help="a text file with one training prompt per line")
    p.add_argument(
        "--eval-prompts", metavar="FILE", help="prompts whose fresh samples are scored at start/end"
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (logs, checkpoint, adapter)")
    p.add_argument("--max-steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument(
        "--beta", type=float, default=0.04, help="weight of the KL to the reference (default 0.04)"
    )
    p.add_argument("--num-generations", type=int, default=2, help="samples per prompt and step (default 2)")
    p.add_argument(
        "--prompts-per-step", type=int, default=4, help="prompts per step, all processes (default 4)"
    )
    p.add_argument("--duration", type=float, default=2.0, help="seconds per sample (default 2)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="top-k sampling; 0 = off (default)")
    p.add_argument(
        "--truncate-frames",
        type=int,
        default=None,
        metavar="K",
        help="DRaFT-K: only the last K code frames carry the reward's gradient (default: all)",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute the codec's and the judge's activations in backward (less memory, more time)",
    )
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on CUDA devices that support it)",
    )
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every this many steps (default 50)")
    p.add_argument(
        "--sampling",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra sampling option of the backend's library (repeatable); guidance is off by default",
    )
    p.add_argument("--device", default="cpu", help="device of the judge and MusicGen (default cpu)")


def make_config(args: argparse.Namespace):
    """The :class:`MusicBackpropConfig` of the command line; CommandError names a bad option."""
    from ..integrations.backprop_config import MusicBackpropConfig

    try:
        return MusicBackpropConfig(
            output_dir=args.out,
            learning_rate=args.lr,
            beta=args.beta,
            num_generations=args.num_generations,
            prompts_per_step=args.prompts_per_step,
            duration=args.duration,
            temperature=args.temperature,
            top_k=args.top_k,
            truncate_frames=args.truncate_frames,
            gradient_checkpointing=args.gradient_checkpointing,
            bf16=args.bf16,
            max_steps=args.max_steps,
            gradient_accumulation_steps=args.grad_accum,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            seed=args.seed,
            logging_steps=args.logging_steps,
            save_steps=args.save_steps,
            generation_kwargs=parse_sampling(args.sampling) or None,
            report_to="all",
        )
    except (TypeError, ValueError) as err:
        raise CommandError(f"invalid option: {err}") from err


def run(args: argparse.Namespace) -> int:
    import deramos_reward as dr

    from ..integrations.backprop import MusicRewardBackpropTrainer

    config = make_config(args)
    prompts = read_prompts(args)
    eval_prompts = None
    if args.eval_prompts:
        path = Path(args.eval_prompts)
        if not path.is_file():
            raise CommandError(f"--eval-prompts file {args.eval_prompts!r} does not exist")
        eval_prompts = [line.strip() for line in path.read_text().split("\n") if line.strip()]
    judge = dr.DeRAMOS.from_pretrained(args.reward, device=args.device)
    reward = dr.MusicReward(
        judge,
        mi_weight=args.mi_weight,
        ta_weight=args.ta_weight,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    trainer = MusicRewardBackpropTrainer(
        load_backend(args, device=args.device), reward, prompts, config, eval_prompts=eval_prompts
    )
    summary = trainer.train()
    trainer.save_adapter(Path(args.out) / "adapter")
    if trainer.accelerator.is_main_process:
        print(json.dumps(summary, indent=2))
        print(f"deramos backprop: saved the adapter to {Path(args.out) / 'adapter'}", file=sys.stderr)
    return 0
