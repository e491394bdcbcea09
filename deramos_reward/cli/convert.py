"""``deramos convert-reference``: a checkpoint of the authors' code (ASTAR-NTU / DeRA-MOS ``.pth``)
-> a checkpoint folder (config.json + model.safetensors) that every command loads.

The file is read with ``torch.load(weights_only=True)``, so no code in it runs. A missing,
unexpected or wrongly shaped weight is refused, naming the keys.
"""

from __future__ import annotations

import argparse
import sys

from . import options


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = options.add_command(
        sub, name, "convert a checkpoint of the authors' code into a checkpoint folder", __doc__
    )
    p.add_argument("reference", metavar="REF.pth", help="the file the authors' train.py saved")
    p.add_argument("out", metavar="OUT_DIR", help="checkpoint folder to write")
    p.add_argument(
        "--variant",
        choices=("deramos", "astar"),
        default="deramos",
        help="deramos: DeRA-MOS (cross-attention on the raw MuQ frames, SAMA alignment pool); "
        "astar: ASTAR-NTU's muq_roberta_transformer_dist (cross-attention on the MI transformer's output)",
    )
    p.add_argument(
        "--config",
        metavar="CONFIG.json",
        help="a DeRAMOSConfig JSON giving the backbones' configs when the checkpoint is not paper-size "
        "(default: MuQ-large + roberta-base)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..reference import convert_reference_checkpoint

    out = convert_reference_checkpoint(
        args.reference, args.out, variant=args.variant, config=args.config, overwrite=args.overwrite
    )
    print(
        f"wrote {out} (variant {args.variant}); load it with DeRAMOS.from_pretrained or --model",
        file=sys.stderr,
    )
    return 0
