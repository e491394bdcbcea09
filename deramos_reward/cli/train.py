"""``deramos train``: train DeRA-MOS heads on MusicEval-format data or a JSONL manifest (resumable).

Run the same command again after an interruption to continue from the last finished epoch.
Runs unchanged under ``accelerate launch`` (DDP over the heads).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import CommandError

# flag -> TrainConfig field, for the overrides that take a value
_OVERRIDES = {
    "lr": (float, "AdamW learning rate (default 5e-5)"),
    "batch_size": (int, "global batch = the list BALR ranks (default 32)"),
    "max_epochs": (int, "default 100"),
    "patience": (int, "epochs without improvement before stopping; 0 = never (default 15)"),
    "early_stopping": (str, "what patience watches: loss, mi_sys_srcc or combined (default loss)"),
    "seed": (int, "heads init, shuffling, dropout (default 1984)"),
    "device": (str, "auto, cpu or cuda (default auto)"),
    "mixed_precision": (str, "no, bf16 or fp16 (default no)"),
    "num_workers": (int, "audio loader processes for feature extraction"),
    "feature_cache": (str, "folder for cached encoder features (default OUT/features)"),
    "max_seconds": (float, "crop clips to their first N seconds (default: window long clips)"),
    "train_split": (str, "default train"),
    "val_split": (str, "default dev"),
    "init_from": (str, "start from this checkpoint folder's weights and config"),
}


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="train DeRA-MOS heads (resumable; works under accelerate launch)", description=__doc__
    )
    p.add_argument("--data", required=True, help="MusicEval-layout folder or JSONL manifest")
    p.add_argument("--val-data", help="where the validation split is read from (default: --data)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, resumable state")
    p.add_argument("--config", help="train config JSON (TrainConfig fields); flags below override it")
    p.add_argument("--tiny", action="store_true", help="tiny random encoders (offline demo/tests)")
    p.add_argument("--model", help="model preset (paper, tiny, tiny-clap, demo) or a DeRAMOSConfig JSON file")
    p.add_argument(
        "--objective",
        help="loss preset: regression, regression_mse, distribution, distribution+balr, "
        "distribution+sama, deramos (paper), distribution+pairwise",
    )
    p.add_argument("--alpha", type=float, help="BALR weight (default 0.2)")
    p.add_argument("--beta", type=float, help="SAMA weight (default 0.3)")
    p.add_argument("--gather-balr", action="store_true", help="BALR over the global batch of all processes")
    for field, (kind, text) in _OVERRIDES.items():
        p.add_argument("--" + field.replace("_", "-"), type=kind, dest=field, help=text)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace):
    """TrainConfig from ``--config`` (if any) with the command-line overrides applied."""
    from ..losses import LossWeights
    from ..training import TrainConfig

    data = {}
    if args.config:
        data = TrainConfig.load(args.config).to_dict()
    if args.tiny and args.model:
        raise CommandError("give either --tiny or --model, not both")
    if args.tiny:
        data["model"] = "tiny"
    elif args.model:
        if args.model.endswith(".json"):
            try:
                with open(args.model) as f:
                    data["model"] = json.load(f)
            except (OSError, json.JSONDecodeError) as err:
                raise CommandError(f"--model {args.model!r}: {err}") from err
        else:
            data["model"] = args.model
    for field in _OVERRIDES:
        value = getattr(args, field)
        if value is not None:
            data[field] = value
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
    data["loss"] = loss
    return TrainConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from ..training import train

    config = build_config(args)
    result = train(config, args.data, args.out, val_data=args.val_data)
    import accelerate

    if accelerate.PartialState().is_main_process:
        print(
            f"finished {result.epochs} epochs{' (early stop)' if result.stopped_early else ''} in {result.run_dir}"
        )
        for name, best in result.best.items():
            print(f"  {name:<18} epoch {best['epoch']:>3}  value {best['value']:.4f}  -> {best['path']}")
        sys.stdout.flush()
    return 0
