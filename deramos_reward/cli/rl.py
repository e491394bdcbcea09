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

from ..integrations.rl_config import MusicRLConfig
from .backprop import add_method_arguments, check_method_arguments, run_backprop
from .musicgen import add_musicgen_arguments, add_prompt_arguments, load_backend, parse_sampling, read_prompts
from .options import CommandError, add_command, add_config_options, make_config


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
    add_config_options(p, MusicRLConfig)
    p.add_argument("--mi-weight", type=float, default=0.5, help="weight of MI in the judge's reward")
    p.add_argument("--ta-weight", type=float, default=0.5, help="weight of TA in the judge's reward")
    p.add_argument("--no-normalize-per-axis", action="store_true", help="sum MI and TA without standardising")
    p.add_argument(
        "--sampling",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another sampling option of the backend's library (repeatable), e.g. top_p=0.9; guidance, "
        "temperature and top-k have their own options",
    )
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on CUDA)"
    )
    add_method_arguments(p)
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace) -> Any:
    """The ``MusicRLConfig`` of a command line: ``--config`` (if any), then the options given."""
    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise CommandError(f"--config file {args.config!r} does not exist")
        try:
            values = MusicRLConfig.from_json(path.read_text()).to_dict()
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise CommandError(f"--config {args.config}: {err}") from err
    if args.no_normalize_per_axis:
        values["normalize_per_axis"] = False
    if args.bf16 is not None:
        values["bf16"] = args.bf16
    if args.sampling:
        values["generation_kwargs"] = {
            **(values.get("generation_kwargs") or {}),
            **parse_sampling(args.sampling),
        }
    return make_config(MusicRLConfig, args, values, output_dir=args.out)


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
    reward = dr.MusicReward(judge, mi_weight=args.mi_weight, ta_weight=args.ta_weight)
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
