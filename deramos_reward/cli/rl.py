"""``deramos rl``: online RL (GRPO / RLOO) of a LoRA adapter on MusicGen, rewarded by a DeRA-MOS judge.

Each step samples ``--num-generations`` clips for each of ``--prompts-per-step`` prompts from the current
policy, scores them with the judge (MI and TA standardised within each prompt's group, then weighted),
and takes ``--num-iterations`` clipped policy-gradient steps with a KL penalty (``--beta``) to the
reference model (the adapter switched off). What RUN holds:

- ``rl_run.json`` and ``settings.json``: what made the run: the method, the MusicGen, the judge (path and
  sha256 of its files), the reward's weights and shaping, the sampling, the prompts (sha256) and the
  trainer's settings. Running the same command again resumes the run; a command with any of these
  changed is refused, naming it (``--overwrite`` starts over). A RUN holding other files is never
  written into;
- ``checkpoint/``: adapter, optimizer, scheduler, RNG states, step and logs, every ``--save-steps``;
- ``log.jsonl``: one row per ``--logging-steps`` (reward and its parts, KL, clip ratio, entropy,
  diversity, gradient norm, time split into generation, scoring and update);
- ``adapter/``: the final adapter (peft), with ``rl_config.json`` and ``log_history.json``; load it with
  ``deramos_reward.integrations.dpo.load_adapter(model, RUN/adapter)``.

Every usage error is found before anything is written; a first start that fails leaves no RUN behind.
A JSON summary is printed on stdout. ``--config FILE`` reads a ``MusicRLConfig`` JSON; options given
on the command line override it. Runs under ``accelerate launch`` for several GPUs or processes::

    accelerate launch -m deramos_reward.cli rl --backend transformers --musicgen ID --judge J --prompts P --out RUN

``--musicgen tiny`` builds the tiny random MusicGen of the backend offline (tests and demos; makes noise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..integrations.training.rl.config import MusicRLConfig
from . import provenance
from .adapter_run import (
    REWARD_FIELDS,
    RUN_RECORD,
    check_run_folder,
    clear_run,
    first_start,
    is_main_process,
    run_record,
    started,
    training_device,
)
from .backprop import (
    add_method_arguments,
    backprop_config,
    backprop_trainer,
    check_method_arguments,
    judge_weights,
)
from .musicgen import (
    add_musicgen_arguments,
    add_prompt_arguments,
    check_frames,
    check_reward_weights,
    check_sampling,
    load_backend,
    policy_sampling,
    read_prompts,
    warn_long_prompts,
)
from .options import (
    CommandError,
    add_command,
    add_config_options,
    add_device_argument,
    check_output,
    make_config,
)


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
    p.add_argument(
        "--overwrite", action="store_true", help="start over in RUN instead of resuming (a run of deramos rl)"
    )
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
    add_device_argument(p, "training (under accelerate launch: cpu or each process's GPU)")
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
            **policy_sampling(args),
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
    check_method_arguments(args)
    with training_device(args.device):
        return _train(args)


def _settings(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The trainer config and the reward settings of the command line (CommandError when invalid)."""
    config = backprop_config(args) if args.method == "backprop" else build_config(args)
    # the judge's weights are the reward's own (--mi-weight / --ta-weight); the shaping is the config's
    reward = {k: getattr(config, k) for k in REWARD_FIELDS if hasattr(config, k)} | judge_weights(args)
    check_reward_weights(reward["mi_weight"], reward["ta_weight"])
    check_sampling(args.backend, config.generation_kwargs or {})
    if args.method == "rl":
        _check_layout(config)
    return config, reward


def _check_layout(config: Any) -> None:
    """CommandError unless each process's samples split into the micro-batches (as the trainer needs)."""
    procs = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if config.prompts_per_step % procs:
        raise CommandError(
            f"--prompts-per-step {config.prompts_per_step} must be a multiple of the {procs} processes"
        )
    local = config.prompts_per_step // procs * config.num_generations
    if local % config.gradient_accumulation_steps:
        raise CommandError(
            f"each process's {local} samples per step (--prompts-per-step x --num-generations / processes) "
            f"must split evenly into --grad-accum {config.gradient_accumulation_steps} micro-batches"
        )


def _train(args: argparse.Namespace) -> int:
    """Check everything, then train into RUN (created only now; removed again if the start fails)."""
    import deramos_reward as dr

    from ..integrations.training.common.checkpoints import checkpoint_folder
    from ..integrations.training.common.runtime import accelerator_device

    config, reward_settings = _settings(args)
    prompts = read_prompts(args)
    eval_prompts = _eval_prompts(args.eval_prompts)
    check_output(args.out, "--out", folder=True)
    out = Path(args.out)
    record = run_record(args, config, reward_settings, prompts, eval_prompts)
    check_run_folder(out, record, args.overwrite)
    main = is_main_process()

    def finished(folder: Path) -> bool:
        return checkpoint_folder(folder) is not None or (folder / "adapter").is_dir()

    with first_start(out, finished) if main else contextlib.nullcontext():
        device = accelerator_device()
        backend = load_backend(args, device=device)
        check_frames(backend, config.duration)
        judge = dr.DeRAMOS.from_pretrained(args.judge, device=device)
        warn_long_prompts("rl", backend, judge, prompts)
        trainer = _trainer(args, config, backend, judge, prompts, eval_prompts)
        if main:  # only now that every check passed
            if args.overwrite:
                clear_run(out)
            if not started(out):  # a new run (a resumed one was checked against its record)
                provenance.write(out / RUN_RECORD, record)
        summary = trainer.train()
        path = trainer.save_adapter(out / "adapter")
    if trainer.accelerator.is_main_process:
        shown = summary if args.method == "backprop" else {
            k: v for k, v in summary.items() if not isinstance(v, (dict, list))
        }  # fmt: skip
        print(json.dumps(shown, indent=2))
        method = " --method backprop" if args.method == "backprop" else ""
        print(f"deramos rl{method}: {summary['global_step']} steps; adapter saved to {path}", file=sys.stderr)
    return 0


def _trainer(args, config, backend, judge, prompts, eval_prompts):
    if args.method == "backprop":
        return backprop_trainer(args, config, backend, judge, prompts, eval_prompts)
    import deramos_reward as dr

    from ..integrations.rl import MusicRLTrainer

    reward = dr.MusicReward(judge, **judge_weights(args))
    return MusicRLTrainer(
        backend.model, reward, prompts, config, processor=backend.processor, eval_prompts=eval_prompts
    )


__all__ = ["add_parser", "build_config", "run"]
