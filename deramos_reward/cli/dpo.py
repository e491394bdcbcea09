"""``deramos dpo``: DPO of a LoRA adapter on MusicGen's decoder from ``deramos pairs`` output.

The reference policy is the same model with the adapter switched off. The adapter is saved with peft
in OUT (``adapter_config.json``, ``adapter_model.safetensors``, plus ``dpo_config.json`` and
``log_history.json``); load it with ``deramos_reward.integrations.dpo.load_adapter(model, OUT)``.
A JSON summary (``global_step``, ``train_loss``, the last logged metrics and, with ``--eval-pairs``,
``eval/...`` metrics) is printed on stdout.

OUT is also the run folder: ``settings.json``, ``log.jsonl`` and ``checkpoint/`` (adapter, optimizer,
scheduler, RNG states, data order, step, logs) every ``--save-steps``. Running the same command again
after an interruption resumes mid-run and ends with the adapter an uninterrupted run gives; a command
with other settings is refused (use a new OUT).

Runs under ``accelerate launch`` for several GPUs or processes::

    accelerate launch -m deramos_reward.cli dpo --backend transformers --musicgen ... --pairs P --out A

``--musicgen tiny`` builds the tiny random MusicGen of the chosen backend offline (tests and demos).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import CommandError
from .musicgen import add_musicgen_arguments, load_backend


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="DPO-tune a LoRA adapter on MusicGen from preference pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_musicgen_arguments(p)
    p.add_argument("--pairs", required=True, metavar="DIR", help="pairs dataset folder (deramos pairs --out)")
    p.add_argument("--out", required=True, metavar="ADAPTER_DIR", help="where the adapter is saved")
    p.add_argument("--eval-pairs", metavar="DIR", help="held-out pairs to evaluate after training")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--loss-type", default="sigmoid", choices=("sigmoid", "ipo"))
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; overrides --epochs when > 0")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per device per step")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--save-steps", type=int, default=500, help="steps per resumable checkpoint (default 500)")
    p.add_argument("--precompute-ref", action="store_true", help="compute reference log-probs once up front")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..integrations.dpo import MusicDPOConfig, MusicDPOTrainer
    from ..integrations.preference import load_pairs

    try:
        config = MusicDPOConfig(
            output_dir=args.out,
            beta=args.beta,
            loss_type=args.loss_type,
            learning_rate=args.lr,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            seed=args.seed,
            logging_steps=args.logging_steps,
            save_steps=args.save_steps,
            precompute_ref_log_probs=args.precompute_ref,
            bf16=args.bf16,
        )
    except (TypeError, ValueError) as err:
        raise CommandError(f"invalid option: {err}") from err
    pairs = load_pairs(args.pairs)
    eval_pairs = load_pairs(args.eval_pairs) if args.eval_pairs else None
    trainer = MusicDPOTrainer(load_backend(args), pairs, config, eval_dataset=eval_pairs)
    summary = trainer.train()
    if eval_pairs is not None:
        summary.update({f"eval/{k}": v for k, v in trainer.evaluate().items()})
    trainer.save_adapter(args.out)
    if trainer.accelerator.is_main_process:
        print(json.dumps(summary, indent=2))
        print(f"deramos dpo: saved the adapter to {args.out}", file=sys.stderr)
    return 0
