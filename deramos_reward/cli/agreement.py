"""``deramos agreement``: how well a judge agrees with listeners, and listeners with each other.

Reads a ratings file of ``deramos rate`` (MOS or A/B, told apart by its lines). MOS: utterance- and
system-level MSE / LCC / SRCC / KTAU of the judge against each clip's mean rating, Krippendorff's
alpha between raters. A/B: the judge's pairwise accuracy (weighted score, MI, TA), system-level
SRCC against win rates, raters' agreement and alpha. Every figure comes with a percentile bootstrap
interval. Without --model only the raters' agreement is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes
from .options import CommandError, add_command, add_device_argument, check_output, resolve_device


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(
        sub,
        name,
        "judge vs listeners and inter-rater agreement of deramos rate answers (bootstrap CIs)",
        __doc__,
    )
    p.add_argument("ratings", help="ratings file written by deramos rate")
    p.add_argument("--model", help="judge checkpoint folder or hub id (default: raters' agreement only)")
    add_device_argument(p, "the judge")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass of the judge")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--mi-weight", type=float, default=1.0, help="A/B: judge score = mi_weight * MI + ta_weight * TA"
    )
    p.add_argument("--ta-weight", type=float, default=1.0, help="A/B: the weight of TA in the judge score")
    p.add_argument("--out", help="also write the report as JSON here")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    """CommandError for an option out of range (before anything is read or scored)."""
    if not os.path.isfile(args.ratings):
        raise CommandError(f"ratings file {args.ratings!r} does not exist")
    check_output(args.out, "--out", folder=False)
    if args.n_boot < 1:
        raise CommandError(f"--n-boot must be >= 1 (bootstrap replicates), got {args.n_boot}")
    if not 0 < args.level < 1:
        raise CommandError(f"--level must be in (0, 1) (e.g. 0.95 for 95 % intervals), got {args.level}")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    for flag, value in (("--mi-weight", args.mi_weight), ("--ta-weight", args.ta_weight)):
        if not math.isfinite(value):
            raise CommandError(f"{flag} must be a finite number, got {value}")
    if args.mi_weight == 0 and args.ta_weight == 0:
        raise CommandError("--mi-weight and --ta-weight are both 0: the judge's A/B score would be constant")


def run(args: argparse.Namespace) -> int:
    from ..jsonl import read_rows
    from ..rating.agreement import ab_report, format_report, mos_report, rated_clips
    from ..rating.export import read_answers

    _check(args)
    first = read_rows(args.ratings, repair=False)[:1]
    mode = "ab" if first and "choice" in first[0] else "mos"
    rows = read_answers(args.ratings, mode)
    judge = None
    if args.model:
        import deramos_reward as dr

        clips = rated_clips(rows, os.path.dirname(os.path.abspath(args.ratings)))
        missing = [path for path, _ in clips.values() if not os.path.isfile(path)]
        if missing:
            raise CommandError(f"audio file {missing[0]!r} named in {args.ratings!r} does not exist")
        model = dr.DeRAMOS.from_pretrained(args.model, device=resolve_device(args.device))
        ids = list(clips)
        scores = dr.score(
            model,
            [clips[i][0] for i in ids],
            [clips[i][1] for i in ids],
            batch_size=args.batch_size,
            progress=True,
        )
        judge = {i: (s["mi"], s["ta"]) for i, s in zip(ids, scores)}
    common = dict(n_boot=args.n_boot, seed=args.seed, level=args.level)
    if mode == "mos":
        report = mos_report(rows, judge, **common)
    else:
        report = ab_report(rows, judge, args.mi_weight, args.ta_weight, **common)
    print(format_report(report))
    if args.out:
        text = json.dumps(_finite(report), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(Path(args.out), text.encode())
        print(f"deramos agreement: wrote {args.out}", file=sys.stderr)
    return 0


def _finite(value: Any) -> Any:
    """The report with undefined figures (nan) as null, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
