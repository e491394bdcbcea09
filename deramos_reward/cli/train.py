"""``deramos train``: train DeRA-MOS heads on MusicEval-format data or a JSONL manifest (resumable).

Run the same command again after an interruption to continue from the last finished epoch; raise
--max-epochs (or --patience) to extend a finished run. A folder holding a run with other settings
or data is refused; --overwrite starts over. Runs unchanged under ``accelerate launch`` (DDP over
the heads).

Checkpoints: best_loss (lowest validation loss), best_mi_sys_srcc (highest system-level MI SRCC)
and best_combined (highest (utterance-level MI SRCC + system-level TA SRCC) / 2). When a metric is
undefined on the validation split (one system, constant ratings, too few clips), it is logged as
null and the checkpoint follows the utterance-level SRCC instead, or the validation loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from ..training.config import TrainConfig
from .options import (
    CommandError,
    add_command,
    add_config_options,
    add_device_argument,
    add_rating_scale_argument,
    check_output,
    config_values,
    resolve_device,
)

TRAIN_DEVICES = ("auto", "cpu", "cuda")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(sub, name, "train DeRA-MOS heads (resumable; works under accelerate launch)", __doc__)
    p.add_argument("--data", required=True, help="MusicEval-layout folder or JSONL manifest")
    p.add_argument("--val-data", help="where the validation split is read from (default: --data)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, resumable state")
    p.add_argument("--overwrite", action="store_true", help="start over in --out instead of resuming")
    p.add_argument("--config", help="train config JSON (TrainConfig fields); flags below override it")
    p.add_argument("--tiny", action="store_true", help="tiny random encoders (offline demo/tests)")
    p.add_argument("--model", help="model preset (paper, tiny, tiny-clap, demo) or a DeRAMOSConfig JSON file")
    p.add_argument(
        "--objective",
        help="loss preset: regression, regression_mse, distribution, distribution+balr, "
        "distribution+sama, deramos (paper), distribution+pairwise (default deramos)",
    )
    p.add_argument("--alpha", type=float, help="BALR weight (default 0.2)")
    p.add_argument("--beta", type=float, help="SAMA weight (default 0.3)")
    p.add_argument(
        "--contrast",
        type=float,
        metavar="GAMMA",
        help="add the prompt-contrast TA loss with this weight (not in the paper; 0 = off, the default)",
    )
    p.add_argument("--gather-balr", action="store_true", help="BALR over the global batch of all processes")
    add_rating_scale_argument(p)
    add_config_options(p, TrainConfig)
    p.add_argument(
        "--init",
        dest="init_from",
        metavar="CKPT",
        help="adapt an existing judge: start from this checkpoint (alias of --init-from; heads train, encoders stay frozen)",
    )
    add_device_argument(p, "feature extraction and training", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _model_setting(args: argparse.Namespace):
    if args.tiny and args.model:
        raise CommandError("give either --tiny or --model, not both")
    if args.init_from is not None and (args.tiny or args.model):
        flag = "--tiny" if args.tiny else f"--model {args.model}"
        raise CommandError(
            f"--init {args.init_from!r} starts from that checkpoint's own model, so {flag} would be ignored; "
            "give one of them"
        )
    if args.tiny:
        return "tiny"
    if args.model and os.path.isdir(args.model):
        raise CommandError(
            f"--model {args.model!r} is a folder; it takes a preset (paper, tiny, tiny-clap) or a "
            "DeRAMOSConfig JSON file (to start from a checkpoint folder, use --init-from)"
        )
    if args.model and args.model.endswith(".json"):
        from ..validation import check_file

        path = check_file(args.model, "--model")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CommandError(f"--model {args.model!r} is not valid JSON: {err}") from err
    return args.model


def _device(spec: str | None) -> str | None:
    if spec is None:
        return None
    resolve_device(spec)  # unknown or missing device: one line, exit 2
    if spec not in TRAIN_DEVICES:
        raise CommandError(
            f"--device {spec!r}: training takes auto, cpu or cuda (under accelerate launch each process "
            "gets its own GPU)"
        )
    return spec


def build_config(args: argparse.Namespace):
    """TrainConfig from ``--config`` (if any) with the command-line overrides applied."""
    from ..losses import LossWeights

    data = TrainConfig.load(args.config).to_dict() if args.config else {}
    model = _model_setting(args)
    if model is not None:
        data["model"] = model
    data.update(config_values(args, TrainConfig))
    device = _device(args.device)
    if device is not None:
        data["device"] = device
    if args.rating_scale is not None:
        data["rating_scale"] = list(args.rating_scale)
    if args.gather_balr:
        data["gather_balr"] = True
    if args.quiet:
        data["progress"] = False
    loss = data.get("loss", {})
    if args.objective:
        loss = LossWeights.preset(args.objective).to_dict()
    for key in ("alpha", "beta"):
        if getattr(args, key) is not None:
            loss[key] = getattr(args, key)
    if args.contrast is not None:
        loss["use_contrast"] = args.contrast != 0
        if args.contrast != 0:  # a negative weight is refused by LossWeights.validate, by name
            loss["gamma"] = args.contrast
    data["loss"] = loss
    return TrainConfig.from_dict(data)


def _value(value: float | None) -> str:
    return "undefined" if value is None or math.isnan(value) else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    from ..training import train

    check_output(args.out, "--out", folder=True)
    config = build_config(args)
    result = train(config, args.data, args.out, val_data=args.val_data, overwrite=args.overwrite)
    import accelerate

    if accelerate.PartialState().is_main_process:
        print(
            f"finished {result.epochs} epochs{' (early stop)' if result.stopped_early else ''} in {result.run_dir}"
        )
        for name, best in result.best.items():
            quantity = best.get("quantity", name)
            print(
                f"  {name:<18} epoch {best['epoch']:>3}  {quantity} = {_value(best['value'])}  -> {best['path']}"
            )
        sys.stdout.flush()
    return 0
