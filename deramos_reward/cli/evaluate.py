"""``deramos eval``: score a split, print the challenge metrics, write metrics JSON, answer.txt, plots.

A split without labels (e.g. a challenge test list) needs --answer: it gets ``answer.txt`` only
(metrics need labels). Metrics that are undefined on the split (one system, constant ratings, too
few clips) are printed as nan and written as null, with the reason stated once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import options
from .options import CommandError, check_output, resolve_device


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = options.add_command(sub, name, "evaluate a model on a split (MSE/LCC/SRCC/KTAU, answer.txt)", __doc__)
    p.add_argument("--model", required=True, help="checkpoint folder (e.g. RUN_DIR/best_combined) or hub id")
    p.add_argument("--data", required=True, help="MusicEval-layout folder or JSONL manifest")
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument("--out", help="write metrics (and the bootstrap CIs) to this JSON file")
    p.add_argument("--answer", help="write the challenge submission file (lines wavID,MI,TA)")
    p.add_argument(
        "--plot", action="store_true", help="write predicted-vs-true scatter PNGs (needs matplotlib)"
    )
    p.add_argument("--plot-dir", help="folder for the PNGs (default: beside --out, else the current folder)")
    options.add_device_argument(p, "the model")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    p.add_argument("--max-seconds", type=float, help="crop clips to their first N seconds (as in training)")
    p.add_argument(
        "--reference-protocol",
        action="store_true",
        help="score exactly as the authors' evaluation loop: 30 s crop/pad, batches of --batch-size over "
        "the clips sorted by file name, their positional-encoding and TA-pooling behaviour",
    )
    options.add_rating_scale_argument(p)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the system-SRCC CI")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace, labeled: bool) -> str:
    """Validate the options against the split before the slow part -> the device to use."""
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_output(args.out, "--out", folder=False)
    check_output(args.answer, "--answer", folder=False)
    check_output(args.plot_dir, "--plot-dir", folder=True)
    if args.n_boot < 1:
        raise CommandError(f"--n-boot must be >= 1, got {args.n_boot}")
    if args.reference_protocol and args.max_seconds is not None:
        raise CommandError("--reference-protocol crops every clip to 30 s itself; drop --max-seconds")
    if not labeled:
        if args.out or args.plot:
            raise CommandError(
                f"split {args.split!r} has unlabeled clips: --out and --plot need a labeled split"
            )
        if not args.answer:
            raise CommandError(
                f"split {args.split!r} has unlabeled clips, so there are no metrics to compute; "
                "give --answer FILE to write the predictions"
            )
    if args.plot:  # fail before the slow part if matplotlib is missing
        from .._optional import require

        require("matplotlib")
    return resolve_device(args.device)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import atomic_write_bytes
    from ..data import load_dataset_split
    from ..evaluation import (
        evaluate_split,
        format_report,
        predict,
        predict_reference,
        scatter_plot,
        write_answer,
    )
    from ..metrics import json_safe
    from ..model import DeRAMOS

    examples = load_dataset_split(args.data, args.split, args.rating_scale)
    labeled = all(e.labeled for e in examples)
    device = _check(args, labeled)
    model = DeRAMOS.from_pretrained(args.model, device=device)
    if args.reference_protocol:
        mi, ta = predict_reference(model, examples, args.batch_size, progress=not args.quiet)
    else:
        mi, ta = predict(model, examples, args.batch_size, args.max_seconds, progress=not args.quiet)
    if args.answer:
        write_answer(args.answer, [e.wav_id for e in examples], mi, ta)
        print(f"wrote {args.answer} ({len(examples)} clips)", file=sys.stderr)
    if not labeled:
        print(f"split {args.split!r} has unlabeled clips: no metrics (answer file only)", file=sys.stderr)
        return 0
    report = evaluate_split(mi, ta, examples, n_boot=args.n_boot)
    report.update({"model": str(args.model), "data": str(args.data), "split": args.split})
    report["protocol"] = "reference" if args.reference_protocol else "deramos-reward"
    if args.rating_scale is not None:
        report["rating_scale"] = list(args.rating_scale)  # labels were mapped from it onto 1-5
    print(format_report(report))
    if args.out:
        out = Path(args.out)
        atomic_write_bytes(out, json.dumps(json_safe(report), indent=1).encode())
        print(f"wrote {out}", file=sys.stderr)
    if args.plot:
        folder = Path(args.plot_dir) if args.plot_dir else (Path(args.out).parent if args.out else Path("."))
        systems = [e.system for e in examples]
        for axis, pred in (("MI", mi), ("TA", ta)):
            true = [e.mi if axis == "MI" else e.ta for e in examples]
            path = scatter_plot(folder / f"scatter_{axis}.png", pred, true, systems, axis)
            print(f"wrote {path}", file=sys.stderr)
    return 0
