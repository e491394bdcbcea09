"""``deramos rl``: online RL (GRPO / RLOO) of a LoRA adapter on MusicGen, rewarded by a DeRA-MOS judge.

Each step samples ``--num-generations`` clips for each of ``--prompts-per-step`` prompts from the current
policy, scores them with the judge (MI and TA standardised within each prompt's group, then weighted),
and takes ``--num-iterations`` clipped policy-gradient steps with a KL penalty (``--beta``) to the
reference model (the adapter switched off). What RUN holds:

- ``settings.json``: the run's settings; running the same command again resumes the run, and a command
  with other settings is refused (use a new RUN);
- ``checkpoint/``: adapter, optimizer, scheduler, RNG states, step and logs, every ``--save-steps``;
- ``log.jsonl``: one row per ``--logging-steps`` (reward and its parts, KL, clip ratio, entropy,
  diversity, gradient norm, time split into generation, scoring and update);
- ``adapter/``: the final adapter (peft), with ``rl_config.json`` and ``log_history.json``; load it with
  ``deramos_reward.integrations.dpo.load_adapter(model, RUN/adapter)``.

A JSON summary is printed on stdout. ``--config FILE`` reads a ``MusicRLConfig`` JSON; options given
on the command line override it. Runs under ``accelerate launch`` for several GPUs or processes::

    accelerate launch -m deramos_reward.cli rl --backend transformers --musicgen ID --judge J --prompts P --out RUN

``--musicgen tiny`` builds the tiny random MusicGen of the backend offline (tests and demos; makes noise).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .backprop import add_method_arguments, check_method_arguments, run_backprop
from .musicgen import add_musicgen_arguments, add_prompt_arguments, load_backend, parse_sampling, read_prompts
from .options import CommandError, add_command

# option -> (MusicRLConfig field, type, help); every default comes from MusicRLConfig (or --config)
_OPTIONS = {
    "--num-generations": ("num_generations", int, "samples per prompt (the group; default 8)"),
    "--prompts-per-step": ("prompts_per_step", int, "prompts per step, all processes together (default 4)"),
    "--max-steps": ("max_steps", int, "optimizer steps (default 100)"),
    "--lr": ("learning_rate", float, "learning rate (default 1e-4)"),
    "--beta": ("beta", float, "weight of the KL to the reference (default 0.04)"),
    "--epsilon": ("epsilon", float, "clip range of the importance ratio (default 0.2)"),
    "--num-iterations": ("num_iterations", int, "updates per batch of samples (default 1)"),
    "--advantage": ("advantage", str, "grpo (group mean/std) or rloo (leave-one-out) (default grpo)"),
    "--loss-type": ("loss_type", str, "grpo, bnpo, dr_grpo or dapo (default dapo)"),
    "--duration": ("duration", float, "seconds per sample (default 2)"),
    "--temperature": ("temperature", float, "sampling temperature (default 1)"),
    "--top-k": ("top_k", int, "top-k sampling, 0 = off (default 0)"),
    "--mi-weight": ("mi_weight", float, "weight of MI (default 0.5)"),
    "--ta-weight": ("ta_weight", float, "weight of TA (default 0.5)"),
    "--uncertainty-penalty": (
        "uncertainty_penalty",
        float,
        "reward mean - this x the judge's std (default 0)",
    ),
    "--diversity-weight": ("diversity_weight", float, "bonus for distinct samples in a group (default 0)"),
    "--lora-r": ("lora_r", int, "LoRA rank (default 8)"),
    "--lora-alpha": ("lora_alpha", int, "LoRA alpha (default 16)"),
    "--grad-accum": ("gradient_accumulation_steps", int, "micro-batches per update (default 1)"),
    "--logging-steps": ("logging_steps", int, "steps per log row (default 10)"),
    "--save-steps": ("save_steps", int, "steps per checkpoint (default 500)"),
    "--eval-steps": ("eval_steps", int, "steps per evaluation on --eval-prompts (default: start and end)"),
    "--seed": ("seed", int, "seed of sampling and the adapter's initialisation (default 42)"),
}


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(
        sub, name, "online RL (GRPO/RLOO) of a LoRA adapter on MusicGen with a DeRA-MOS reward", __doc__
    )
    add_musicgen_arguments(p)
    p.add_argument(
        "--judge", "--reward", dest="judge", required=True, metavar="CKPT", help="DeRA-MOS checkpoint"
    )
    add_prompt_arguments(p, "training prompt")
    p.add_argument(
        "--eval-prompts", metavar="FILE", help="prompts whose fresh samples are scored (one per line)"
    )
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (resumed when it exists)")
    p.add_argument("--config", metavar="JSON", help="a MusicRLConfig JSON file (options override it)")
    for flag, (_, kind, text) in _OPTIONS.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--no-normalize-per-axis", action="store_true", help="sum MI and TA without standardising")
    p.add_argument(
        "--sampling",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampling option of the backend's library (repeatable), e.g. guidance_scale=1.0 (transformers) "
        "or cfg_coef=1.0 (audiocraft); guidance 1 keeps the samples on-policy",
    )
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on CUDA)"
    )
    add_method_arguments(p)
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace) -> Any:
    """The ``MusicRLConfig`` of a command line: ``--config`` (if any), then the options given."""
    from ..integrations.rl import MusicRLConfig

    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise CommandError(f"--config file {args.config!r} does not exist")
        try:
            values = MusicRLConfig.from_json(path.read_text()).to_dict()
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise CommandError(f"--config {args.config}: {err}") from err
    for flag, (field, _, _) in _OPTIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            values[field] = value
    if args.no_normalize_per_axis:
        values["normalize_per_axis"] = False
    if args.bf16 is not None:
        values["bf16"] = args.bf16
    if args.sampling:
        values["generation_kwargs"] = {
            **(values.get("generation_kwargs") or {}),
            **parse_sampling(args.sampling),
        }
    values["output_dir"] = args.out
    try:
        return MusicRLConfig(**values)
    except (TypeError, ValueError) as err:
        raise CommandError(f"invalid option: {err}") from err


def _eval_prompts(path: str | None) -> list[str] | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--eval-prompts file {path!r} does not exist")
    prompts = [line.strip() for line in file.read_text().split("\n") if line.strip()]
    if not prompts:
        raise CommandError(f"--eval-prompts file {path!r} holds no prompts")
    return prompts


def run(args: argparse.Namespace) -> int:
    import deramos_reward as dr

    from ..integrations import tuning
    from ..integrations.rl import MusicRLTrainer

    check_method_arguments(args)
    if args.method == "backprop":
        return run_backprop(args, _eval_prompts(args.eval_prompts))
    config = build_config(args)
    prompts = read_prompts(args)
    eval_prompts = _eval_prompts(args.eval_prompts)
    device = tuning.accelerator_device()
    backend = load_backend(args, device=device)
    judge = dr.DeRAMOS.from_pretrained(args.judge, device=device)
    reward = dr.MusicReward(judge, mi_weight=config.mi_weight, ta_weight=config.ta_weight)
    trainer = MusicRLTrainer(
        backend.model, reward, prompts, config, processor=backend.processor, eval_prompts=eval_prompts
    )
    summary = trainer.train()
    path = trainer.save_adapter(Path(args.out) / "adapter")
    if trainer.accelerator.is_main_process:
        print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (dict, list))}, indent=2))
        print(f"deramos rl: {summary['global_step']} steps; adapter saved to {path}", file=sys.stderr)
    return 0


__all__ = ["add_parser", "build_config", "run"]
